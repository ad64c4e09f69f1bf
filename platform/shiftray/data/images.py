"""Encoded images (JPEG, PNG, ...) -> float tensors, in the workers.

Images are stored as their encoded bytes (Parquet ``input`` column, binary) and decoded where
they are trained on:

- on a CUDA device, JPEGs go through nvJPEG in one batched call
  (``torchcodec.decoders.decode_jpeg(list, device="cuda")``), then resize + centre crop on the
  GPU; other formats fall back to the CPU decoder and are moved over;
- on CPU, a thread pool runs torchcodec's decoders (torch ops: they release the GIL).

Every image becomes (3, size, size) float32 in [0, 1]: shorter side resized to ``size``
(antialiased), then centre-cropped, the same on both paths (up to the decoders' rounding).

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

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

JPEG_MAGIC = b"\xff\xd8\xff"


def _torchvision():
    """Import torchcodec's decoders and torchvision's transforms in the calling thread.

    Importing torchvision for the first time from several pool threads at once races Python's
    import lock on its circular submodules (``cannot import name 'InterpolationMode' from
    partially initialized module``), so ``decode_batch`` imports both before it starts a thread.
    """
    import torchcodec.decoders
    import torchvision.transforms.v2.functional as TF

    return torchcodec.decoders, TF


def _fit(img: torch.Tensor, size: int) -> torch.Tensor:
    _, TF = _torchvision()
    return TF.center_crop(TF.resize(img, [size], antialias=True), [size, size])


def decode_rgb(blob: bytes) -> torch.Tensor:
    """Encoded bytes -> uint8 (3, H, W) (a 16-bit PNG scaled to 0..255; an animated GIF or
    WebP gives (frames, 3, H, W)). Raises RuntimeError or ValueError on what it cannot read."""
    codec, _ = _torchvision()
    raw = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
    decode = codec.decode_jpeg if blob[:3] == JPEG_MAGIC else codec.decode_image
    return decode(raw, mode="RGB")


def _decode_cpu(blob: bytes, size: int) -> torch.Tensor:
    return _fit(decode_rgb(blob), size)


def checked_bytes(blob: bytes) -> bytes | None:
    """``blob`` if the training decoder reads it as one image; else the image (an animation's
    first frame) re-encoded as PNG when PIL reads it (BMP, TIFF, animated GIF, ...); None when
    nothing does (truncated, not an image).
    Call `_torchvision` in the calling thread before running this from a pool."""
    try:
        if decode_rgb(blob).ndim == 3:  # not an animation
            return blob
    except (RuntimeError, ValueError):
        pass
    import io as pyio

    from PIL import Image

    try:
        with Image.open(pyio.BytesIO(blob)) as im:
            out = pyio.BytesIO()
            im.convert("RGB").save(out, format="PNG")
            return out.getvalue()
    except Exception:  # PIL raises many types for broken files
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
            out[i] = _fit(img, size)
    for i, b in enumerate(blobs):
        if out[i] is None:  # PNG, BMP, ...: CPU decoder, then to the device
            out[i] = _fit(_decode_cpu(b, size).to(device), size)
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
