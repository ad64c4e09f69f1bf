"""Request payloads -> the model's input array, or a `BadInput` that says what was wrong.

A served model takes what its training reader produced (`InputSpec`, from ``labels.json`` and
``spec.yaml``):

- feature vectors, shape (D,): a list of D finite numbers per instance;
- images, shape (C, S, S) in [0, 1]: an encoded image (PNG, JPEG, ... as base64, KServe's
  ``{"b64": "..."}``), or the array itself ((C, S, S), or (S, S) when C is 1). Encoded images are
  decoded as training decodes them (`shiftray.data.images`), grey models take the mean of R, G
  and B, and an image of another size is resized as its reader resized it: ``stretch`` (digits:
  bilinear, antialiased, to S x S) or ``fit`` (image folders: shorter side to S, centre crop);
- texts, for transformers backbones (``hf/...``), shape (L,) token ids: the text itself, a string
  (V1 instances, V2 ``BYTES``), tokenised here by the backbone's tokenizer as training tokenised
  it (`shiftray.models.text.tokenize`: truncated and padded to the training's L tokens).

Every check names the instance, what it found and what the model expects. Nothing here reads a
file or a path from the request.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

MAX_IMAGE_PIXELS = 40_000_000  # an encoded image that decodes larger is refused, not decoded
MAX_TEXT_CHARS = 100_000  # a longer text is refused (the model reads its first L tokens anyway)


class BadInput(ValueError):
    """A request the model cannot answer; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InputSpec:
    """What one instance must be."""

    kind: Literal["image", "vector", "text"]
    shape: tuple[int, ...]  # one instance: (C, S, S), (D,) or (L,) token ids
    resize: Literal["stretch", "fit", "none"] = "none"  # how an encoded image of another size fits
    dtype: str = "float32"
    tokenizer: str = ""  # text: the backbone's tokenizer (hub name or folder)

    @classmethod
    def of(cls, input_shape: tuple[int, ...] | list[int], benchmark: str,
           backbone: str = "") -> InputSpec:  # fmt: skip
        shape = tuple(int(s) for s in input_shape)
        if backbone.startswith("hf/") and len(shape) == 1:
            return cls("text", shape, dtype="int64", tokenizer=backbone.removeprefix("hf/"))
        if len(shape) == 3:
            resize = "stretch" if benchmark == "digits" or shape[0] == 1 else "fit"
            return cls("image", shape, resize)
        if len(shape) == 1:
            return cls("vector", shape)
        raise ValueError(f"cannot serve inputs of shape {shape}: images (C, S, S) or vectors (D,)")

    def describe(self) -> dict[str, Any]:
        out = asdict(self) | {"shape": list(self.shape)}
        if self.kind != "text":
            out.pop("tokenizer")
        if self.kind == "text":
            out["accepts"] = [f"a string: the text (tokenised as in training, its first "
                              f"{self.shape[0]} tokens read)"]  # fmt: skip
        elif self.kind == "image":
            c, s, _ = self.shape
            out["accepts"] = [
                '{"b64": "<base64 PNG/JPEG/...>"}',
                f"array ({c}, {s}, {s})" + (f" or ({s}, {s})" if c == 1 else "") + " in [0, 1]",
            ]
        else:
            out["accepts"] = [f"list of {self.shape[0]} numbers"]
        return out


def as_array(value: Any, where: str) -> np.ndarray:
    """A JSON number / nested list -> float64 array; refuses ragged lists, non-numbers, NaN, inf."""
    try:
        arr = np.asarray(value)
    except ValueError as e:  # ragged nesting (numpy >= 1.24 raises)
        raise BadInput(f"{where}: not a rectangular array of numbers ({e})") from None
    if arr.dtype == object:
        raise BadInput(f"{where}: not a rectangular array of numbers (ragged or mixed nesting)")
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        kind = {"U": "strings", "S": "bytes", "b": "booleans"}.get(arr.dtype.kind, str(arr.dtype))
        raise BadInput(f"{where}: expected numbers, got {kind}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise BadInput(f"{where}: {bad} value(s) are NaN or infinite; every value must be finite")
    return arr


def decode_image(b64: Any, spec: InputSpec, where: str) -> np.ndarray:
    """base64 of an encoded image -> (C, S, S) float32 in [0, 1], resized as the reader did."""
    if not isinstance(b64, str):
        raise BadInput(f'{where}: "b64" must be a base64 string, got {type(b64).__name__}')
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f'{where}: "b64" is not valid base64') from None
    from shiftray.data.images import decode_rgb

    _checked_size(blob, where)
    try:
        img = decode_rgb(blob)
    except (RuntimeError, ValueError):
        raise BadInput(f"{where}: the bytes are not an image this server can decode "
                       "(PNG, JPEG, GIF, WebP)") from None  # fmt: skip
    if img.ndim == 4:  # an animation: its first frame
        img = img[0]
    c, s, _ = spec.shape
    x = img.float().div_(255)
    if c == 1:
        x = x.mean(0, keepdim=True)
    if tuple(x.shape[1:]) != (s, s):
        x = _resize(x, spec, where)
    return x.numpy().astype(np.float32, copy=False)


def _checked_size(blob: bytes, where: str) -> None:
    """Refuse an image whose header declares more than MAX_IMAGE_PIXELS (a decompression bomb)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as im:
            w, h = im.size
    except Exception:  # PIL raises many types for what is not an image
        raise BadInput(f"{where}: the bytes are not an image this server can decode "
                       "(PNG, JPEG, GIF, WebP)") from None  # fmt: skip
    if w * h > MAX_IMAGE_PIXELS:
        raise BadInput(f"{where}: image of {w}x{h} pixels is over the limit of "
                       f"{MAX_IMAGE_PIXELS:,} pixels")  # fmt: skip


def _resize(x, spec: InputSpec, where: str):
    import torch

    s = spec.shape[1]
    if spec.resize == "stretch":
        from shiftray.data.readers.digits import resize_square

        return torch.from_numpy(resize_square(x.numpy(), s))
    if spec.resize == "fit":
        from shiftray.data.images import _fit

        return _fit(x, s)
    raise BadInput(f"{where}: image is {tuple(x.shape[1:])}, the model takes {(s, s)}")


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
    return tokenize(texts, spec.tokenizer, spec.shape[0])


def instance_array(value: Any, spec: InputSpec, where: str) -> np.ndarray:
    """One V1 instance -> float32 array of ``spec.shape``."""
    if spec.kind == "image" and isinstance(value, dict):
        if set(value) != {"b64"}:
            raise BadInput(f'{where}: an encoded image is {{"b64": "<base64>"}}, got keys '
                           f"{sorted(value)}")  # fmt: skip
        return decode_image(value["b64"], spec, where)
    if isinstance(value, (dict, str)) or value is None:
        expected = spec.describe()["accepts"]
        raise BadInput(f"{where}: expected {' or '.join(expected)}, got {type(value).__name__}")
    arr = as_array(value, where)
    if spec.kind == "image" and spec.shape[0] == 1 and arr.shape == spec.shape[1:]:
        arr = arr[None]
    if arr.shape != spec.shape:
        raise BadInput(f"{where}: shape {list(arr.shape)}, the model takes {list(spec.shape)}"
                       + (f" ({spec.shape[0]} features)" if spec.kind == "vector" else ""))  # fmt: skip
    return arr.astype(np.float32)


def check_count(n: int, limit: int, what: str = "instances") -> None:
    if n == 0:
        raise BadInput(f"no {what}: send at least one")
    if n > limit:
        raise BadInput(f"{n} {what} in one request, over the limit of {limit}; split the batch")


def v1_instances(instances: list[Any], spec: InputSpec, limit: int) -> np.ndarray:
    """KServe V1 ``instances`` -> (N, *shape) float32 (int64 token ids for a text model)."""
    check_count(len(instances), limit)
    if spec.kind == "text":
        return texts_ids(instances, spec, "instances")
    return np.stack([instance_array(v, spec, f"instances[{i}]") for i, v in enumerate(instances)])


V2_NUMERIC = {
    "FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT8": np.int8,
    "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8,
    "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
}  # fmt: skip


def v2_tensor(shape: list[int], datatype: str, data: Any, spec: InputSpec, limit: int):
    """One Open Inference Protocol input tensor -> (N, *shape) float32.

    Numeric datatypes carry the instances themselves (``shape`` = [N, *instance shape], data
    flat in row-major order or nested); ``BYTES`` carries N base64-encoded images (shape [N])."""
    where = "inputs[0]"
    if any((not isinstance(s, int)) or s < 0 for s in shape):
        raise BadInput(f"{where}.shape {shape}: sizes must be non-negative integers")
    if spec.kind == "text":
        if datatype != "BYTES" or len(shape) != 1:
            raise BadInput(f"{where}: a text model takes BYTES of shape [N], the N texts as "
                           f"strings; got {datatype} of shape {shape}")  # fmt: skip
        items = data if isinstance(data, list) else [data]
        if shape[0] != len(items):
            raise BadInput(f"{where}: shape [{shape[0]}] but {len(items)} texts")
        check_count(len(items), limit)
        return texts_ids(items, spec, f"{where}.data")
    if datatype == "BYTES":
        if spec.kind != "image":
            raise BadInput(f"{where}: BYTES (encoded images) sent to a model of feature vectors; "
                           f"send FP32 of shape [N, {spec.shape[0]}]")  # fmt: skip
        items = data if isinstance(data, list) else [data]
        if len(shape) != 1 or shape[0] != len(items):
            raise BadInput(f"{where}: BYTES shape must be [N] with N = {len(items)} images, "
                           f"got {shape}")  # fmt: skip
        check_count(len(items), limit)
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
    typed = arr.astype(V2_NUMERIC[datatype])
    if not np.array_equal(typed.astype(np.float64), arr):
        raise BadInput(f"{where}.data: values do not fit datatype {datatype}")
    return typed.reshape(shape).astype(np.float32)
