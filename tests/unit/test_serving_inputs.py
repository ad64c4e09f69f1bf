"""The serving input contract and hostile inputs, without Ray: the contract read from the
checkpoint (or asked of the reader), values checked in float32 and in range, every format the
image-folder reader takes decoded as training decodes it, a 40,000 x 1 PNG at bounded memory,
and a property-based fuzz of V1 and V2 decoding (an array of the contract, or a 4xx BadInput)."""

import base64
import io
import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import synthetic_spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from shiftray.config.load import spec_from_dict
from shiftray.data.images import checked_bytes, decode_images
from shiftray.serving.inputs import (
    MAX_ASPECT,
    V2_NUMERIC,
    BadInput,
    InputSpec,
    decode_image,
    v1_instances,
    v2_tensor,
)

FIT = InputSpec("image", (3, 8, 8), "fit", range=(0.0, 1.0))
STRETCH = InputSpec("image", (1, 8, 8), "stretch", range=(0.0, 1.0))
VEC = InputSpec("vector", (4,))
COUNTS = InputSpec("vector", (4,), range=(0.0, None))  # amazon's word counts: never negative


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def tiny_images() -> dict[str, bytes]:
    """One small image in each format the image-folder reader takes, and an animated GIF."""
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 18, 3), np.uint8))
    frames = [Image.fromarray(np.full((10, 14, 3), v, np.uint8)) for v in (30, 220)]
    blobs = {f: encoded(rgb, f) for f in ("PNG", "JPEG", "WEBP", "BMP", "TIFF")}
    blobs["GIF"] = encoded(rgb.convert("P"), "GIF")
    blobs["animated GIF"] = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    blobs["grey PNG"] = encoded(rgb.convert("L"), "PNG")
    return blobs


TINY = tiny_images()


# -- the contract, from the checkpoint ----------------------------------------------------------


def test_the_contract_is_read_from_the_checkpoint_and_old_ones_ask_their_reader():
    spec = spec_from_dict(synthetic_spec())
    labels = {"classes": ["a"], "input_shape": [1, 28, 28]}
    written = {"kind": "image", "shape": [1, 28, 28], "resize": "stretch", "range": [0, 1],
               "dtype": "float32", "tokenizer": "", "added_later": 1}  # fmt: skip
    got = InputSpec.from_checkpoint(labels | {"input": written}, spec)  # no benchmark asked
    assert (got.kind, got.shape, got.resize, got.range) == ("image", (1, 28, 28), "stretch", (0, 1))
    old = {"benchmark": "digits", "options": {}}
    digits = spec.model_copy(update={"data": spec.data.model_copy(update=old)})
    assert InputSpec.from_checkpoint(labels, digits) == InputSpec.of([1, 28, 28], "digits")
    assert InputSpec.of([1, 28, 28], "digits").resize == "stretch"  # the reader's trait
    assert InputSpec.of([3, 64, 64], "imagefolder").resize == "fit"  # the default for images
    blobs = InputSpec.from_checkpoint(labels | {"input_shape": [1, 8, 8]}, spec)
    assert blobs.kind == "image" and blobs.range is None and blobs.resize == "none"  # synthetic
    text = InputSpec.of([16], "synthetic", "hf/some/bert")  # the backbone reads texts
    assert (text.kind, text.dtype, text.tokenizer) == ("text", "int64", "some/bert")
    assert InputSpec.of([8], "amazon").range == (0.0, None)
    with pytest.raises(ValueError, match="cannot serve"):
        InputSpec.of([2, 3], "synthetic")


def test_describe_keeps_its_keys_and_adds_the_range():
    image = STRETCH.describe()
    assert {k: image[k] for k in ("kind", "shape", "resize", "dtype", "range")} == {
        "kind": "image", "shape": [1, 8, 8], "resize": "stretch", "dtype": "float32",
        "range": [0.0, 1.0],
    }  # fmt: skip
    assert "BMP" in image["accepts"][0] and image["accepts"][1].endswith("in [0, 1]")
    assert COUNTS.describe()["accepts"] == ["list of 4 numbers >= 0"]
    assert "tokenizer" not in image and "range" not in InputSpec.of([8], "drugreview").describe()


# -- values in float32 and in range --------------------------------------------------------------


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: v1_instances([[0, 0, 0, 1e300]], VEC, 8), "instances[0]: 1 value(s) are not fin"),
        (lambda: v1_instances([[0] * 4, [0, 0, -1e39, 0]], VEC, 8), "instances[1]: 1 value(s)"),
        (lambda: v2_tensor([2, 4], "FP64", [0] * 7 + [1e300], VEC, 8), "data, instance 1: 1 val"),
        (lambda: v1_instances([[0, 1, 2, -0.5]], COUNTS, 8), "values must be >= 0"),
        (lambda: v1_instances([np.full((8, 8), 1.01).tolist()], STRETCH, 8), "in [0, 1] (images"),
        (lambda: v2_tensor([1, 1, 8, 8], "FP32", [-3.0] * 64, STRETCH, 8), "found min -3, max -3"),
        (lambda: v2_tensor([1, 4], "FP16", [1e5] * 4, VEC, 8), "do not fit datatype FP16"),
    ],
)  # fmt: skip
def test_values_are_checked_after_the_cast_and_against_the_range(call, message):
    with pytest.raises(BadInput) as err:
        call()
    assert message in str(err.value) and err.value.status == 422


def test_values_within_the_tolerance_are_clipped_into_range():
    edge = np.full((8, 8), 1 + 1e-7)
    edge[0, 0] = -1e-7
    got = v1_instances([edge.tolist()], STRETCH, 8)
    assert got.dtype == np.float32 and got.min() == 0.0 and got.max() == 1.0
    big = v2_tensor([1, 4], "FP64", [3e38, -3e38, 0, 1], VEC, 8)  # finite as float32: taken
    assert np.isfinite(big).all()


# -- formats and sizes ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(TINY))
def test_every_format_of_the_reader_is_served_with_the_pixels_training_reads(fmt):
    """Serving decodes and fits as the image-folder reader does (`checked_bytes` when it reads
    the file, `decode_images` when it trains): BMP and TIFF through PIL, the rest torchcodec."""
    spec = InputSpec("image", (3, 16, 16), "fit", range=(0.0, 1.0))
    served = v1_instances([{"b64": b64(TINY[fmt])}], spec, 8)[0]
    trained = decode_images([checked_bytes(TINY[fmt])], 16)[0]
    np.testing.assert_array_equal(served, trained)


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "PCX"])
def test_formats_the_reader_does_not_take_are_refused(fmt):
    blob = encoded(Image.new("RGB", (8, 8)), fmt)
    with pytest.raises(BadInput, match="not an image this server can decode .*BMP, TIFF"):
        decode_image(b64(blob), FIT, "x")
    assert checked_bytes(blob) is None  # nor does training read it


def test_an_image_with_sides_far_apart_is_refused_naming_the_limit():
    ok = encoded(Image.new("RGB", (int(8 * MAX_ASPECT), 8)), "PNG")
    assert decode_image(b64(ok), FIT, "x").shape == (3, 8, 8)
    wide = encoded(Image.new("RGB", (int(8 * MAX_ASPECT) + 1, 8)), "PNG")
    with pytest.raises(BadInput, match=r"instances\[0\]: image of 161x8 .* limit of 20 to 1"):
        v1_instances([{"b64": b64(wide)}], FIT, 8)


RSS = """
import base64, io, json, resource
from PIL import Image
from shiftray.data.images import decode_any, fit_square
from shiftray.serving.inputs import BadInput, InputSpec, v1_instances

def png(w, h):
    buf = io.BytesIO()
    Image.new("RGB", (w, h)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

spec = InputSpec("image", (3, 224, 224), "fit", range=(0.0, 1.0))
line, photo = png(40_000, 1), png(300, 200)
v1_instances([{"b64": base64.b64encode(photo).decode()}], spec, 1)  # every import, first calls
fit_square(decode_any(photo), 224)
base = peak_mb()
try:
    v1_instances([{"b64": base64.b64encode(line).decode()}], spec, 1)
    outcome = "decoded"
except BadInput as e:
    outcome = f"{e.status}: {e}"
served = peak_mb() - base
fitted = fit_square(decode_any(line), 224)  # training's path, which has no size guard
print(json.dumps({"bytes": len(line), "outcome": outcome, "served_mb": served,
                  "trained_mb": peak_mb() - base, "shape": list(fitted.shape)}))
"""


def test_a_40000_by_1_png_costs_bounded_memory():
    """A ~200-byte 40,000 x 1 PNG sent to a (3, 224, 224) ``fit`` model is refused (422: its
    sides are 40,000 to 1 apart, over MAX_ASPECT) before any pixel is decoded; and training's
    own path (`decode_any`, then `fit_square`, no guard) decodes it too, cropping its 1 x 1
    centre square before resizing it. Peak RSS of the subprocess rises <= 50 MB over a baseline
    taken just before, for both (resizing the short side first would allocate 224 x 8,960,000)."""
    done = subprocess.run([sys.executable, "-c", RSS], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.splitlines()[-1])
    print(got)  # -s shows the measured rises
    assert got["bytes"] < 1000 and got["outcome"].startswith("422: ")
    assert "40000x1" in got["outcome"] and "limit of 20 to 1" in got["outcome"]
    assert got["served_mb"] <= 50 and got["trained_mb"] <= 50 and got["shape"] == [3, 224, 224]


def test_a_lone_surrogate_is_refused_before_the_tokenizer_sees_it():
    text = InputSpec("text", (8,), dtype="int64", tokenizer="never/loaded")
    with pytest.raises(BadInput, match=r"instances\[1\]: not valid Unicode"):
        v1_instances(["fine", "bad \ud800 text"], text, 8)


# -- fuzz: every input is an array of the contract, or a 4xx BadInput -----------------------------


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "a", "b"]
    path = tmp_path_factory.mktemp("tok") / "tok"
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(path)
    return str(path)


def specs(tokenizer: str) -> list[InputSpec]:
    """The contracts fuzzed: 4 x 4 images (a few dozen values to draw per instance)."""
    images = [InputSpec("image", (c, 4, 4), resize, range=(0.0, 1.0))
              for c, resize in ((3, "fit"), (1, "stretch"))]  # fmt: skip
    return [*images, VEC, COUNTS, InputSpec("text", (12,), dtype="int64", tokenizer=tokenizer)]


NUMBERS = st.one_of(
    st.floats(0, 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1e-7, 1 + 1e-7, 1e300, -1e300, 3.5e38, 5e-324, 65504.0, 2**63]),
    st.booleans(),
)
CHARS = st.one_of(st.characters(exclude_categories=()), st.sampled_from(["\ud800", " ", "\x00"]))
TEXTS = st.text(CHARS, max_size=20)  # lone surrogates too: JSON's "\ud800" decodes to one


def mutated(blob: bytes, cut: int, at: int, byte: int) -> bytes:
    """A real image truncated, or with one byte changed (a header that lies about the rest)."""
    if cut % 2:
        return blob[: cut % len(blob)]
    at %= len(blob)
    return blob[:at] + bytes([byte]) + blob[at + 1 :]


REAL = st.sampled_from(list(TINY)).map(TINY.get)  # by name: a short repr in reports
IMAGES = st.one_of(
    REAL,
    st.binary(max_size=64),
    st.builds(mutated, REAL, st.integers(0, 2000), st.integers(0, 2000), st.integers(0, 255)),
).map(b64)
LEAVES = st.one_of(NUMBERS, TEXTS, st.none(), IMAGES)
JSON = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["b64", "x"]), inner, max_size=2)),
    max_leaves=12,
)  # fmt: skip


@st.composite
def shaped(draw, shape: tuple[int, ...], values=NUMBERS, exact: bool = False):
    """Nested lists of ``shape`` (unless ``exact``, sometimes a dimension off by one), half of
    them of values in [0, 1]."""
    if not exact:
        shape = tuple(max(0, s + draw(st.sampled_from([0, 0, 0, 0, 1, -1]))) for s in shape)
    plain = exact or draw(st.booleans())
    n = int(np.prod(shape))
    flat = draw(st.lists(st.floats(0, 1) if plain else values, min_size=n, max_size=n))
    return np.array(flat, dtype=object).reshape(shape).tolist()


def instances(spec: InputSpec):
    """V1 bodies: lists of valid instances, of plausible ones (arrays of about the right shape,
    real and broken images, texts), and anything JSON holds."""
    valid = st.one_of(shaped(spec.shape, exact=True), st.fixed_dictionaries({"b64": REAL.map(b64)}))
    if spec.kind == "text":
        valid = st.lists(st.sampled_from(["good", "bad", "film", "zebra"]), min_size=1).map(
            " ".join
        )
    one = st.one_of(shaped(spec.shape), shaped(spec.shape[1:]),
                    st.fixed_dictionaries({"b64": IMAGES}), TEXTS, JSON)  # fmt: skip
    return st.one_of(st.lists(valid, min_size=1, max_size=3), st.lists(one, max_size=4), JSON)


def tensors(spec: InputSpec):
    """V2 (shape, datatype, data): numeric tensors of about the right shape (flat or nested),
    BYTES of real or broken images or texts, and junk."""
    names = st.one_of(st.sampled_from(["FP32", "FP64"]), st.sampled_from([*V2_NUMERIC, "BYTES"]))
    numeric = st.integers(0, 3).flatmap(
        lambda k: st.tuples(st.just([k, *spec.shape]), names, flat_or_nested((k, *spec.shape)))
    )
    items = st.one_of(st.lists(REAL.map(b64), min_size=1, max_size=3),
                      st.lists(TEXTS, min_size=1, max_size=3),
                      st.lists(st.one_of(IMAGES, TEXTS, JSON), max_size=3))  # fmt: skip
    encoded = items.map(lambda d: ([len(d)], "BYTES", d))
    junk = st.tuples(st.lists(st.integers(-2, 12), max_size=4), st.one_of(names, st.text()), JSON)
    return st.one_of(numeric, numeric, encoded, junk)  # numeric: twice as often


@st.composite
def flat_or_nested(draw, shape: tuple[int, ...]):
    data = draw(shaped(shape, exact=draw(st.booleans())))
    return np.array(data, dtype=object).ravel().tolist() if draw(st.booleans()) else data


def check(call, spec: InputSpec) -> str:
    """``call()`` answers an array of the contract ("ok") or raises a 4xx BadInput ("refused");
    any other exception fails the test."""
    try:
        out = call()
    except BadInput as e:
        assert 400 <= e.status < 500
        return "refused"
    assert out.shape[1:] == spec.shape and len(out) >= 1
    if spec.kind == "text":
        assert out.dtype == np.int64
        return "ok"
    assert out.dtype == np.float32 and np.isfinite(out).all()
    lo, hi = spec.range or (None, None)
    assert (lo is None or out.min() >= lo) and (hi is None or out.max() <= hi)
    return "ok"


EXAMPLES = 200  # per contract and protocol: 5 x 200 = 1,000 V1 bodies and 1,000 V2 tensors
SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]  # big JSON is the point
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=SLOW)


def fuzz(strategy, call, spec: InputSpec) -> Counter:
    seen: Counter = Counter()

    @FUZZ
    @given(strategy)
    def run(request):
        seen[check(lambda: call(request), spec)] += 1

    run()
    return seen


@pytest.mark.parametrize("which", range(5))
def test_fuzz_v1_instances(tokenizer, which):
    spec = specs(tokenizer)[which]
    seen = fuzz(instances(spec), lambda body: v1_instances(body, spec, 3), spec)
    assert sum(seen.values()) >= EXAMPLES and seen["ok"] > 0 and seen["refused"] > 0


@pytest.mark.parametrize("which", range(5))
def test_fuzz_v2_tensors(tokenizer, which):
    spec = specs(tokenizer)[which]
    seen = fuzz(tensors(spec), lambda t: v2_tensor(*t, spec, 3), spec)
    assert sum(seen.values()) >= EXAMPLES and seen["ok"] > 0 and seen["refused"] > 0
