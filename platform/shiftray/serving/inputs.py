"""Request payloads -> the model's input array, or a `BadInput` that says what was wrong.

A served model takes what its training reader produced: the `InputContract` training wrote into
its checkpoint (`InputSpec.from_checkpoint`; a checkpoint written before that asks its reader):

- feature vectors, shape (D,): a list of D numbers per instance;
- images, shape (C, S, S): an encoded image (base64, KServe's ``{"b64": "..."}``) in a format
  the image-folder reader takes (JPEG, PNG, GIF, WebP, BMP, TIFF), or the array itself ((C, S,
  S), or (S, S) when C is 1). Encoded images are decoded as training decodes them
  (`shiftray.data.images.decode_any`), grey models take the mean of R, G and B, and an image of
  another size is resized as its reader resized it: ``fit`` (image folders: the centre square,
  resized; `fit_square`, training's own function) or ``stretch`` (digits: the whole image,
  bilinear, antialiased);
- texts, shape (L,) token ids: the text itself, a string (V1 instances, V2 ``BYTES``),
  tokenised here by the backbone's tokenizer as training tokenised it
  (`shiftray.models.text.tokenize`: truncated and padded to the training's L tokens).

Every value is checked in the model's dtype, after the cast: 1e300 is finite in the request and
infinite as float32. Values must lie in the contract's range (images [0, 1]; vectors the range
their reader declares, if any; up to `RANGE_TOLERANCE`, then clipped). An encoded image is
refused before any pixel is decoded when its header declares over `MAX_IMAGE_PIXELS` pixels or
sides more than `MAX_ASPECT` to 1 apart, so one request costs O(its pixels + S^2) memory.

Every check names the instance, what it found and what the model expects. Nothing here reads a
file or a path from the request.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from shiftray.data.readers.base import InputContract, job_input_contract
from shiftray.data.readers.imagefolder import IMAGE_FORMATS

if TYPE_CHECKING:
    import torch

    from shiftray.config.schema import JobSpec

MAX_IMAGE_PIXELS = 40_000_000  # an encoded image that decodes larger is refused, not decoded
MAX_ASPECT = 20.0  # longer side / shorter side of an encoded image, at most
MAX_TEXT_CHARS = 100_000  # a longer text is refused (the model reads its first L tokens anyway)
RANGE_TOLERANCE = 1e-6  # a value this far outside its range (relative to 1) is clipped, not refused
FORMATS = ", ".join({"WEBP": "WebP"}.get(f, f) for f in IMAGE_FORMATS)
NOT_DECODABLE = f"the bytes are not an image this server can decode ({FORMATS})"


class BadInput(ValueError):
    """A request the model cannot answer; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InputSpec(InputContract):
    """What one instance must be: the trained model's `InputContract`, as serving reads it."""

    @classmethod
    def from_checkpoint(cls, labels: dict[str, Any], spec: JobSpec) -> InputSpec:
        """The contract in ``labels`` (labels.json ``"input"``); a checkpoint written before
        training recorded it asks the reader and backbone named in ``spec``."""
        if labels.get("input") is not None:
            return cls._served(InputContract.from_json(labels["input"]))
        data = spec.data
        return cls._served(job_input_contract(data.benchmark, data.options, spec.model.backbone,
                                              labels["input_shape"]))  # fmt: skip

    @classmethod
    def of(cls, input_shape: tuple[int, ...] | list[int], benchmark: str,
           backbone: str = "") -> InputSpec:  # fmt: skip
        """The contract of ``benchmark``'s reader with its default options (`from_checkpoint`
        reads the one a model was trained with)."""
        return cls._served(job_input_contract(benchmark, None, backbone, input_shape))

    @classmethod
    def _served(cls, contract: InputContract) -> InputSpec:
        if contract.kind not in ("image", "vector", "text") or (
            contract.kind == "image" and len(contract.shape) != 3
        ):
            raise ValueError(f"cannot serve inputs of shape {contract.shape}: images (C, S, S), "
                             "vectors (D,) or texts")  # fmt: skip
        return cls(**{f.name: getattr(contract, f.name) for f in fields(InputContract)})

    def describe(self) -> dict[str, Any]:
        out = self.to_json()
        out.pop("range" if self.kind == "text" else "tokenizer")
        within = _range_text(self.range)
        if self.kind == "text":
            out["accepts"] = [f"a string: the text (tokenised as in training, its first "
                              f"{self.shape[0]} tokens read)"]  # fmt: skip
        elif self.kind == "image":
            c, s, _ = self.shape
            out["accepts"] = [
                f'{{"b64": "<base64 {FORMATS.replace(", ", "/")}>"}}',
                f"array ({c}, {s}, {s})" + (f" or ({s}, {s})" if c == 1 else "") + within,
            ]
        else:
            out["accepts"] = [f"list of {self.shape[0]} numbers{within}"]
        return out


def _range_text(rng: tuple[float | None, float | None] | None) -> str:
    if rng is None or rng == (None, None):
        return ""
    lo, hi = rng
    if lo is not None and hi is not None:
        return f" in [{lo:g}, {hi:g}]"
    return f" >= {lo:g}" if lo is not None else f" <= {hi:g}"


def as_array(value: Any, where: str) -> np.ndarray:
    """A JSON number / nested list -> float64 array; refuses ragged lists, non-numbers, NaN, inf."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as e:  # ragged nesting (numpy >= 1.24 raises)
        raise BadInput(f"{where}: not a rectangular array of numbers ({e})") from None
    if arr.dtype == object:
        raise BadInput(f"{where}: not a rectangular array of numbers (ragged or mixed nesting, "
                       "or integers beyond 64 bits)")  # fmt: skip
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        kind = {"U": "strings", "S": "bytes", "b": "booleans"}.get(arr.dtype.kind, str(arr.dtype))
        raise BadInput(f"{where}: expected numbers, got {kind}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise BadInput(f"{where}: {bad} value(s) are NaN or infinite; every value must be finite")
    return arr


def in_contract(x: np.ndarray, spec: InputSpec, name: Callable[[int], str]) -> np.ndarray:
    """(N, *shape) numbers -> float32, every instance finite once cast (1e300 is finite here
    and infinite as float32) and within ``spec.range`` (up to `RANGE_TOLERANCE`, then clipped);
    else a BadInput naming the first instance that is not (``name(i)``)."""
    with np.errstate(over="ignore", invalid="ignore"):
        cast = x.astype(np.float32)
    rows = cast.reshape(len(cast), -1)
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        found = np.abs(np.asarray(x[i], dtype=np.float64)).max()
        raise BadInput(f"{name(i)}: {int((~np.isfinite(rows[i])).sum())} value(s) are not "
                       f"finite as float32 (largest magnitude {found:.3g}; float32 holds up to "
                       "3.4e+38)")  # fmt: skip
    if spec.range is None:
        return cast
    lo, hi = (-np.inf if spec.range[0] is None else spec.range[0],
              np.inf if spec.range[1] is None else spec.range[1])  # fmt: skip
    slack = [RANGE_TOLERANCE * max(1.0, abs(b)) if np.isfinite(b) else 0.0 for b in (lo, hi)]
    inside = ((rows >= lo - slack[0]) & (rows <= hi + slack[1])).all(axis=1)
    if not inside.all():
        i = int(np.argmin(inside))
        found = f"found min {rows[i].min():.6g}, max {rows[i].max():.6g}"
        raise BadInput(f"{name(i)}: values must be{_range_text(spec.range)} ({spec.kind}s of "
                       f"this model); {found}")  # fmt: skip
    return np.clip(cast, lo, hi)


def decode_image(b64: Any, spec: InputSpec, where: str) -> np.ndarray:
    """base64 of an encoded image -> (C, S, S) float32 in [0, 1], decoded and fitted as its
    reader decoded and fitted it; its size is checked before any pixel is decoded."""
    if not isinstance(b64, str):
        raise BadInput(f'{where}: "b64" must be a base64 string, got {type(b64).__name__}')
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f'{where}: "b64" is not valid base64') from None
    from shiftray.data.images import decode_any

    header = _checked_header(blob, where)
    try:
        img = decode_any(blob, header)
    except ValueError:
        raise BadInput(f"{where}: {NOT_DECODABLE}") from None
    return _fitted(img, spec, where).numpy()


def _checked_header(blob: bytes, where: str):
    """The image's header, if it is one of the reader's formats and its declared size is within
    MAX_IMAGE_PIXELS and MAX_ASPECT (a decompression bomb, or a 40,000 x 1 line, is refused)."""
    from shiftray.data.images import ImageTooLarge, read_header

    try:
        header = read_header(blob)
    except ImageTooLarge:
        raise BadInput(f"{where}: image is over the limit of {MAX_IMAGE_PIXELS:,} pixels") from None
    except ValueError as e:
        raise BadInput(f"{where}: {NOT_DECODABLE}: {e}") from None
    w, h = header.width, header.height
    if header.pixels > MAX_IMAGE_PIXELS:
        raise BadInput(f"{where}: image of {w}x{h} pixels is over the limit of "
                       f"{MAX_IMAGE_PIXELS:,} pixels")  # fmt: skip
    if header.aspect > MAX_ASPECT:
        ratio = f"{header.aspect:,.2f}".rstrip("0").rstrip(".")
        raise BadInput(f"{where}: image of {w}x{h} pixels has sides {ratio} to 1 apart, over "
                       f"the limit of {MAX_ASPECT:g} to 1")  # fmt: skip
    return header


def _fitted(img: torch.Tensor, spec: InputSpec, where: str) -> torch.Tensor:
    """uint8 (3, H, W) -> float32 (C, S, S) in [0, 1], resized as ``spec.resize`` says."""
    import torch

    c, s, _ = spec.shape
    if c not in (1, 3):
        raise BadInput(f"{where}: the model takes {c} channels; encoded images give 1 or 3")
    if spec.resize == "fit" or tuple(img.shape[1:]) == (s, s):
        from shiftray.data.images import fit_square

        x = fit_square(img, s).float().div_(255)  # training's pixels: uint8 fitted, then scaled
        return x.mean(0, keepdim=True) if c == 1 else x
    if spec.resize == "stretch":
        from shiftray.data.readers.digits import resize_square

        if c == 1:  # one float channel at a time: 4 bytes a pixel at most, not 12
            planes = [img.sum(0, keepdim=True, dtype=torch.float32).div_(765)]
        else:
            planes = [img[k : k + 1].float().div_(255) for k in range(3)]
        return torch.cat([torch.from_numpy(resize_square(p.numpy(), s)) for p in planes])
    raise BadInput(f"{where}: image is {tuple(img.shape[1:])}, the model takes {(s, s)}")


def texts_ids(texts: list[Any], spec: InputSpec, where: str) -> np.ndarray:
    """Strings -> (N, L) int64 token ids, as training tokenised them."""
    from shiftray.models.text import tokenize

    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise BadInput(f"{where}[{i}]: expected a string (the text), got {type(t).__name__}")
        if not t.strip():
            raise BadInput(f"{where}[{i}]: the text is empty")
        if len(t) > MAX_TEXT_CHARS:
            raise BadInput(f"{where}[{i}]: {len(t):,} characters, over the limit of "
                           f"{MAX_TEXT_CHARS:,}")  # fmt: skip
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:  # JSON's "\ud800": the tokenizer would raise TypeError
            raise BadInput(f"{where}[{i}]: not valid Unicode ({e.reason} at {e.start})") from None
    return tokenize(texts, spec.tokenizer, spec.shape[0])


def instance_array(value: Any, spec: InputSpec, where: str) -> np.ndarray:
    """One V1 instance -> float32 array of ``spec.shape``, within the contract."""
    if spec.kind == "image" and isinstance(value, dict):
        if set(value) != {"b64"}:
            raise BadInput(f'{where}: an encoded image is {{"b64": "<base64>"}}, got keys '
                           f"{sorted(map(str, value))}")  # fmt: skip
        return decode_image(value["b64"], spec, where)
    if isinstance(value, (dict, str, bytes)) or value is None:
        expected = spec.describe()["accepts"]
        raise BadInput(f"{where}: expected {' or '.join(expected)}, got {type(value).__name__}")
    arr = as_array(value, where)
    if spec.kind == "image" and spec.shape[0] == 1 and arr.shape == spec.shape[1:]:
        arr = arr[None]
    if arr.shape != spec.shape:
        raise BadInput(f"{where}: shape {list(arr.shape)}, the model takes {list(spec.shape)}"
                       + (f" ({spec.shape[0]} features)" if spec.kind == "vector" else ""))  # fmt: skip
    return in_contract(arr[None], spec, lambda _: where)[0]


def check_count(n: int, limit: int, what: str = "instances") -> None:
    if n == 0:
        raise BadInput(f"no {what}: send at least one")
    if n > limit:
        raise BadInput(f"{n} {what} in one request, over the limit of {limit}; split the batch")


def v1_instances(instances: list[Any], spec: InputSpec, limit: int) -> np.ndarray:
    """KServe V1 ``instances`` -> (N, *shape) float32 (int64 token ids for a text model)."""
    if not isinstance(instances, list):
        raise BadInput(f"instances: expected a list, got {type(instances).__name__}")
    check_count(len(instances), limit)
    if spec.kind == "text":
        return texts_ids(instances, spec, "instances")
    return np.stack([instance_array(v, spec, f"instances[{i}]") for i, v in enumerate(instances)])


V2_NUMERIC = {
    "FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT8": np.int8,
    "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8,
    "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
}  # fmt: skip


def _v2_items(shape: list[int], data: Any, limit: int, what: str) -> list[Any]:
    """BYTES data: the N items of shape [N] (texts or encoded images)."""
    items = data if isinstance(data, list) else [data]
    if len(shape) != 1 or shape[0] != len(items):
        raise BadInput(f"inputs[0]: BYTES shape must be [N] with N = {len(items)} {what}, "
                       f"got {shape}")  # fmt: skip
    check_count(len(items), limit)
    return items


def v2_tensor(shape: list[int], datatype: str, data: Any, spec: InputSpec, limit: int):
    """One Open Inference Protocol input tensor -> (N, *shape) float32 (int64 token ids).

    Numeric datatypes carry the instances themselves (``shape`` = [N, *instance shape], data
    flat in row-major order or nested); ``BYTES`` carries N base64-encoded images or N texts
    (shape [N])."""
    where = "inputs[0]"
    if not isinstance(shape, list) or any(type(s) is not int or s < 0 for s in shape):
        raise BadInput(f"{where}.shape {shape}: sizes must be non-negative integers")
    if not isinstance(datatype, str):
        raise BadInput(f"{where}.datatype: expected a string, got {type(datatype).__name__}")
    if spec.kind == "text":
        if datatype != "BYTES" or len(shape) != 1:
            raise BadInput(f"{where}: a text model takes BYTES of shape [N], the N texts as "
                           f"strings; got {datatype} of shape {shape}")  # fmt: skip
        return texts_ids(_v2_items(shape, data, limit, "texts"), spec, f"{where}.data")
    if datatype == "BYTES":
        if spec.kind != "image":
            raise BadInput(f"{where}: BYTES (encoded images) sent to a model of feature vectors; "
                           f"send FP32 of shape [N, {spec.shape[0]}]")  # fmt: skip
        items = _v2_items(shape, data, limit, "images")
        return np.stack([decode_image(b, spec, f"{where}.data[{i}]") for i, b in enumerate(items)])
    if datatype not in V2_NUMERIC:
        raise BadInput(f"{where}.datatype {datatype!r}: expected one of "
                       f"{', '.join(['BYTES', *V2_NUMERIC])}")  # fmt: skip
    want = [-1, *spec.shape]
    if len(shape) != len(want) or list(shape[1:]) != list(spec.shape):
        raise BadInput(f"{where}.shape {shape}: the model takes {want} (N instances first)")
    check_count(shape[0], limit)
    arr = as_array(data, f"{where}.data")
    if arr.size != math.prod(shape):
        raise BadInput(f"{where}.data has {arr.size} values, shape {shape} needs "
                       f"{math.prod(shape)}")  # fmt: skip
    with np.errstate(over="ignore", invalid="ignore"):  # a value that does not fit: refused below
        typed = arr.astype(V2_NUMERIC[datatype])
        # integers must be exact; a decimal number for a float tensor is rounded, as the cast
        # to the model's float32 rounds it anyway (overflow is caught after the cast)
        if datatype.startswith("FP"):  # finite values that overflow the float type
            fits = bool(np.isfinite(typed).all() or not np.isfinite(arr[~np.isfinite(typed)]).any())
        else:
            fits = np.array_equal(typed.astype(np.float64), arr)
    if not fits:
        kind = "floats up to" if datatype.startswith("FP") else "integers in its range"
        bound = f" {float(np.finfo(typed.dtype).max):.4g}" if datatype.startswith("FP") else ""
        raise BadInput(f"{where}.data: values do not fit datatype {datatype} ({kind}{bound})")
    return in_contract(typed.reshape(shape), spec, lambda i: f"{where}.data, instance {i}")
