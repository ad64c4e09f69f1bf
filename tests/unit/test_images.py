"""The image decoder (torchcodec): same pixels as PIL, no deprecated torchvision decoder, EXIF."""

import io
import warnings

import numpy as np
import torch
from PIL import Image
from shiftray.data.images import checked_bytes, decode_images, decode_rgb


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_decodes_like_pil_without_torchvision_deprecation_warnings():
    rgb = np.random.default_rng(0).integers(0, 255, (24, 32, 3)).astype(np.uint8)
    im = Image.fromarray(rgb)
    deep = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)  # 16-bit grey PNG
    blobs = [_encoded(im, "JPEG"), _encoded(im, "PNG"), _encoded(im.convert("P"), "GIF"),
             _encoded(deep, "PNG")]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # torchvision.io's decoders warn
        decoded = [decode_rgb(b) for b in blobs]
        x = decode_images(blobs, 16, threads=2)
    pil = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs[:3]]
    for got, want in zip(decoded, pil, strict=False):
        assert got.dtype == torch.uint8 and np.array_equal(got.permute(1, 2, 0).numpy(), want)
    assert np.array_equal(decoded[3][0].numpy(), rgb[..., 0])  # 16 bits scaled back to 8
    assert x.shape == (4, 3, 16, 16) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1


def test_exif_rotated_jpeg_decodes_upright():
    im = Image.fromarray(np.zeros((20, 40, 3), np.uint8))  # wide
    exif = im.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    blob = _encoded(im, "JPEG", exif=exif)
    assert tuple(decode_rgb(blob).shape) == (3, 40, 20)  # tall, as a viewer shows it
    assert checked_bytes(blob) == blob


def test_fit_crops_the_centre_square_first_then_resizes_it():
    """`fit_square` (training's and serving's one fit): the centre min(H, W) square, resized;
    memory O(H W + size^2), so a 40,000 x 1 line costs a 1 x 1 crop, not a 224 x 8,960,000
    resize."""
    import torchvision.transforms.v2.functional as TF
    from shiftray.data.images import fit_square

    img = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 20, 40), np.uint8))
    want = TF.resize(img[:, :, 10:30], [10, 10], antialias=True)
    assert torch.equal(fit_square(img, 10), want)
    assert torch.equal(fit_square(img[:, :, :20], 20), img[:, :, :20])  # at size: untouched
    line = torch.full((3, 1, 40_000), 7, dtype=torch.uint8)
    assert torch.equal(fit_square(line, 224), torch.full((3, 224, 224), 7, dtype=torch.uint8))


def test_every_format_of_the_reader_decodes_to_the_pixels_training_stores():
    """`decode_any` (serving) and `checked_bytes` then `decode_rgb` (training) agree on every
    format `IMAGE_FORMATS` names, and on an animation (its first frame)."""
    from shiftray.data.images import decode_any, read_header
    from shiftray.data.readers.imagefolder import IMAGE_EXTS, IMAGE_FORMATS

    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (12, 18, 3), np.uint8))
    frames = [Image.fromarray(np.full((10, 14, 3), v, np.uint8)) for v in (30, 220)]
    blobs = {f: _encoded(rgb.convert("P") if f == "GIF" else rgb, f) for f in IMAGE_FORMATS}
    blobs["animated"] = _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    for name, blob in blobs.items():
        served, stored = decode_any(blob), checked_bytes(blob)
        assert torch.equal(served, decode_rgb(stored)), name
        assert read_header(blob).format == ("GIF" if name == "animated" else name)
    assert read_header(blobs["animated"]).animated and decode_any(blobs["animated"]).max() == 30
    assert (
        checked_bytes(blobs["BMP"])[:4] == b"\x89PNG"
        and checked_bytes(blobs["PNG"]) == blobs["PNG"]
    )
    mpo = _encoded(rgb, "MPO", save_all=True, append_images=[frames[0]])  # a camera's .jpg
    assert read_header(mpo).format == "JPEG" and checked_bytes(mpo) == mpo  # torchcodec's
    assert set(IMAGE_EXTS) == {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def test_formats_outside_the_reader_s_are_not_images():
    import pytest
    from shiftray.data.images import decode_any, read_header

    ppm = _encoded(Image.new("RGB", (4, 4)), "PPM")
    for blob in (ppm, b"", b"\x89PNG junk"):
        with pytest.raises(ValueError):
            read_header(blob)
        with pytest.raises(ValueError):
            decode_any(blob)
        assert checked_bytes(blob) is None
