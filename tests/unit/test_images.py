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
