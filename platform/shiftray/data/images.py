"""Encoded images (JPEG, PNG, ...) -> float tensors, in the workers.

Images are stored as their encoded bytes (Parquet ``input`` column, binary) and decoded where
they are trained on:

- on a CUDA device, JPEGs go through nvJPEG in one batched call
  (``torchcodec.decoders.decode_jpeg(list, device="cuda")``), then resize + centre crop on the
  GPU; other formats fall back to the CPU decoder and are moved over;
- on CPU, a thread pool runs torchcodec's decoders (torch ops: they release the GIL).

Every image becomes (3, size, size) float32 in [0, 1]: its centre square cropped, then resized
to ``size`` (antialiased; `fit_square`), the same on both paths (up to the decoders' rounding).

The formats are those the image-folder reader takes (`IMAGE_FORMATS`, by file extension):
torchcodec reads JPEG, PNG, GIF and WebP; BMP, TIFF and animations (their first frame) are read
by PIL. `checked_bytes` (training: what is stored) and `decode_any` (serving: a request's
image) make that choice in one place, so a served image has the pixels the model trained on.

Why torchcodec: torchvision 0.29 deprecates its decoders for it. ``bench/decode.py`` measured
torchcodec 0.17 against torchvision.io 0.29.1 on CPU (images per CPU-second of one thread, 9
interleaved rounds; bench/results/cpu-decode.json): the same pixels (max difference 0; and for
grey, CMYK and progressive JPEG, palette, alpha and 16-bit PNG, GIF, WebP); JPEG x1.47 at
224 px, x1.20 at 500 px, x1.00 at the tests' 20 px; PNG x1.01 to x1.04. Its ``decode_image``
sniffs the format in Python (~3 us a call, 20% of a 20 px JPEG), so JPEGs go to
``decode_jpeg`` directly. One difference: torchcodec turns EXIF-rotated JPEGs upright (on CPU
and GPU alike); torchvision ignored the tag. Its GPU path (batched nvJPEG) is not yet measured.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from shiftray.data.readers.imagefolder import IMAGE_FORMATS

JPEG_MAGIC = b"\xff\xd8\xff"

SAME_AS = {"MPO": "JPEG"}  # PIL's name for a camera's multi-picture JPEG (a .jpg)
TORCHCODEC_FORMATS = ("JPEG", "PNG", "GIF", "WEBP")  # what `decode_rgb` reads


@dataclass(frozen=True)
class ImageHeader:
    """What an encoded image's header declares, read before any pixel is decoded."""

    format: str  # a key of IMAGE_FORMATS
    width: int
    height: int
    animated: bool  # more than one frame: its first frame is the image

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def aspect(self) -> float:
        """Longer side / shorter side (inf for an empty side)."""
        short = min(self.width, self.height)
        return max(self.width, self.height) / short if short > 0 else float("inf")


class ImageTooLarge(ValueError):
    """PIL refused to open the image: its header declares over twice PIL's pixel limit."""


def read_header(blob: bytes) -> ImageHeader:
    """The header of ``blob`` (PIL reads it; no pixel is decoded). Raises ValueError for what is
    not an image of `IMAGE_FORMATS` (AVIF, HEIC, PPM, ... are refused: no folder holds them)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as im:
            fmt = SAME_AS.get(im.format or "", im.format or "")
            w, h = im.size
            # an MPO's other pictures (a camera's preview, depth) are no animation: its first
            # is the JPEG torchcodec reads, EXIF rotation and all
            animated = bool(getattr(im, "is_animated", False)) and fmt != "JPEG"
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(str(e)) from None
    except Exception as e:  # PIL raises many types for what is not an image
        raise ValueError(f"not an image ({type(e).__name__})") from None
    if fmt not in IMAGE_FORMATS:
        raise ValueError(
            f"{fmt or 'unknown'} images are not read (only {', '.join(IMAGE_FORMATS)})"
        )
    return ImageHeader(fmt, int(w), int(h), animated)


def _torchvision():
    """Import torchcodec's decoders and torchvision's transforms in the calling thread.

    Importing torchvision for the first time from several pool threads at once races Python's
    import lock on its circular submodules (``cannot import name 'InterpolationMode' from
    partially initialized module``), so ``decode_batch`` imports both before it starts a thread.
    """
    import torchcodec.decoders
    import torchvision.transforms.v2.functional as TF

    return torchcodec.decoders, TF


def fit_square(img: torch.Tensor, size: int) -> torch.Tensor:
    """(..., H, W) -> (..., size, size): the centre square of side min(H, W), then resized to
    ``size`` (bilinear, antialiased), in the image's dtype (uint8 in training and serving).

    Cropping first, in the source's pixels, keeps the work and memory O(H W + size^2): resizing
    the shorter side to ``size`` first would scale a 40,000 x 1 image to 224 x 8,960,000 (6 GB
    as uint8) before cropping it. The crop is `center_crop`'s (its rounding), a view."""
    _, TF = _torchvision()
    side = min(img.shape[-2:])
    square = TF.center_crop(img, [side, side])
    return square if side == size else TF.resize(square, [size, size], antialias=True)


def decode_rgb(blob: bytes) -> torch.Tensor:
    """Encoded bytes -> uint8 (3, H, W) (a 16-bit PNG scaled to 0..255; an animated GIF or
    WebP gives (frames, 3, H, W)). Raises RuntimeError or ValueError on what it cannot read."""
    codec, _ = _torchvision()
    raw = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
    decode = codec.decode_jpeg if blob[:3] == JPEG_MAGIC else codec.decode_image
    return decode(raw, mode="RGB")


def _decode_cpu(blob: bytes, size: int) -> torch.Tensor:
    return fit_square(decode_rgb(blob), size)


def _torchcodec_one(blob: bytes, header: ImageHeader) -> torch.Tensor | None:
    """uint8 (3, H, W) from `decode_rgb` when it reads ``blob`` as one image; None when it is
    PIL's to read (BMP, TIFF, an animation, a file torchcodec fails on)."""
    if header.format not in TORCHCODEC_FORMATS or header.animated:
        return None
    try:
        img = decode_rgb(blob)
    except (RuntimeError, ValueError):
        return None
    return img if img.ndim == 3 else None


def _pil_rgb(blob: bytes):
    """The image (an animation's first frame) as a PIL RGB image. Raises ValueError."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as im:
            return im.convert("RGB")
    except Exception as e:  # PIL raises many types for broken files
        raise ValueError(f"the image does not decode ({type(e).__name__})") from None


def decode_any(blob: bytes, header: ImageHeader | None = None) -> torch.Tensor:
    """Encoded bytes -> uint8 (3, H, W) with the pixels training reads for them: what
    `checked_bytes` stores, decoded. ``header``: `read_header`'s, when the caller read it to
    check the size first. Raises ValueError on what neither decoder reads."""
    img = _torchcodec_one(blob, header or read_header(blob))
    if img is not None:
        return img
    rgb = np.array(_pil_rgb(blob))  # (H, W, 3), a copy numpy owns (torch needs it writable)
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def checked_bytes(blob: bytes) -> bytes | None:
    """``blob`` if the training decoder reads it as one image; else the image (an animation's
    first frame) re-encoded as PNG when PIL reads it (BMP, TIFF, animated GIF, ...); None when
    nothing does (truncated, not an image, a format outside `IMAGE_FORMATS`). PNG is lossless:
    the stored pixels are `decode_any`'s. Call `_torchvision` in the calling thread before
    running this from a pool."""
    try:
        if _torchcodec_one(blob, read_header(blob)) is not None:
            return blob
        out = io.BytesIO()
        _pil_rgb(blob).save(out, format="PNG")
        return out.getvalue()
    except ValueError:
        return None


def decode_batch(
    blobs: list[bytes], size: int, device: torch.device | str = "cpu", threads: int = 4
) -> torch.Tensor:
    """Encoded images -> (N, 3, size, size) float32 in [0, 1] on ``device``."""
    device = torch.device(device)
    if not blobs:
        return torch.zeros((0, 3, size, size), device=device)
    codec, _ = _torchvision()  # before any thread: see _torchvision
    if device.type != "cuda":
        with ThreadPoolExecutor(threads) as pool:
            imgs = list(pool.map(lambda b: _decode_cpu(b, size), blobs))
        return torch.stack(imgs).float().div_(255)
    out: list[torch.Tensor | None] = [None] * len(blobs)
    jpeg = [i for i, b in enumerate(blobs) if b[:3] == JPEG_MAGIC]
    if jpeg:
        raw = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in jpeg]
        decoded = codec.decode_jpeg(raw, mode="RGB", device=device)  # batched nvJPEG
        for i, img in zip(jpeg, decoded, strict=True):
            out[i] = fit_square(img, size)
    for i, b in enumerate(blobs):
        if out[i] is None:  # PNG, BMP, ...: CPU decoder, then to the device
            out[i] = _decode_cpu(b, size).to(device)
    return torch.stack(out).float().div_(255)


def decode_images(blobs: list[bytes], size: int, threads: int = 4) -> np.ndarray:
    """CPU decode to a numpy array (the in-memory data path)."""
    return decode_batch(blobs, size, "cpu", threads).numpy()


class EncodedImages:
    """Images kept encoded in memory and decoded a batch at a time when indexed, for the target
    test split of a streamed job: it is evaluated whole, and decoded it would not fit (DomainNet
    "real", 175k images: a few GB of JPEG, 105 GB as 224-px float32). ``x[idx]`` decodes those
    rows to float32 (len(idx), 3, size, size) as `decode_images` does; ``take`` subsets without
    decoding."""

    def __init__(self, blobs: list[bytes] | np.ndarray, size: int, threads: int = 4) -> None:
        self.blobs = np.empty(len(blobs), dtype=object)
        self.blobs[:] = list(blobs)
        self.size, self.threads = size, threads

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.blobs), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.blobs)

    def take(self, idx: np.ndarray) -> EncodedImages:
        return EncodedImages(self.blobs[idx], self.size, self.threads)

    def to_tensor(self, idx, device: torch.device | str = "cpu") -> torch.Tensor:
        """Rows ``idx`` decoded straight onto ``device`` (batched nvjpeg on a GPU)."""
        return decode_batch(list(self.blobs[idx]), self.size, device, self.threads)

    def __getitem__(self, idx) -> np.ndarray:
        rows = self.blobs[idx]
        if isinstance(rows, bytes):  # one row: (3, size, size)
            return decode_images([rows], self.size, self.threads)[0]
        return decode_images(list(rows), self.size, self.threads)
