"""Image-folder trees as domain tables.

- ``imagefolder``: ``root/<domain>/<class>/*.jpg|png`` (the Office-31 / Office-Home / DomainNet
  layout). ``shiftray data prepare imagefolder -o root=DIR --out OUT`` stores each image as its
  encoded bytes (``input`` is binary, decoded in the workers); training reads decode them with
  a thread pool and resize to ``image_size``. Every domain is used whole (transductive).
  Hidden files and folders (``.cache``, ``._x.jpg``) are skipped. Every image is checked with
  the training decoder when read: what torchcodec does not read as one image (BMP, TIFF, an
  animation's first frame) is re-encoded as PNG; files nothing reads, or whose contents are in
  none of `IMAGE_FORMATS` (an AVIF named .jpg), fail the read, named, unless
  ``on_bad_image: skip``. Images are fitted to ``image_size`` by `fit_square` (centre square,
  resized), the function serving fits a request's image with.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from shiftray.data.arrays import DomainArrays
from shiftray.data.readers.base import Benchmark
from shiftray.errors import UserInputError

# the files read as images: PIL's name of their format -> their extensions. Serving takes
# these formats and no others (`shiftray.data.images.read_header`)
IMAGE_FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg"), "PNG": (".png",), "WEBP": (".webp",), "GIF": (".gif",),
    "BMP": (".bmp",), "TIFF": (".tif", ".tiff"),
}  # fmt: skip
IMAGE_EXTS = tuple(ext for exts in IMAGE_FORMATS.values() for ext in exts)


ENCODED_SCHEMA = pa.schema(
    [
        pa.field("input", pa.binary(), nullable=False),
        pa.field("label", pa.int64(), nullable=True),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
)


class ImageFolderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    root: str = Field(..., description="root/<domain>/<class>/<image>")
    image_size: int = Field(224, ge=8, le=1024)
    on_bad_image: Literal["error", "skip"] = Field(
        "error", description="files no decoder reads: fail naming them, or leave them out"
    )
    threads: int = Field(8, ge=1, description="threads reading and checking images")


def _visible_dirs(folder: Path) -> list[Path]:
    """Sub-folders, hidden ones left out; their names become domain and class names (UTF-8)."""
    dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    for d in dirs:
        try:
            d.name.encode("utf-8")
        except UnicodeEncodeError:
            raw = os.fsencode(d.name)
            raise UserInputError(
                f"folder {raw!r} in {folder}: its name is not UTF-8 (written by a system with "
                f"another encoding, {raw.decode('latin-1')!r} in Latin-1?); domain and class "
                "names are text: rename it"
            ) from None
    return dirs


class ImageFolder(Benchmark):
    """Image-folder trees root/<domain>/<class>/*.jpg (Office-31, Office-Home, DomainNet)."""

    name = "imagefolder"
    Options = ImageFolderOptions
    # every domain is used whole (transductive): `data prepare` writes it once, as train, and
    # the Parquet reader takes a domain's train files as its test split when it has none
    splits = ("train",)

    @classmethod
    def _root(cls, opts) -> Path:
        root = Path(opts.root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"data.options.root={opts.root!r} is not a directory (root/<domain>/<class>/*.jpg)"
            )
        return root

    @classmethod
    def domains(cls, opts):
        root = Path(opts.root).expanduser()
        return [p.name for p in _visible_dirs(root)] if root.is_dir() else None

    @classmethod
    def class_names(cls, opts):
        root = cls._root(opts)
        return sorted({c.name for d in _visible_dirs(root) for c in _visible_dirs(d)})

    @classmethod
    def files(cls, domain: str, opts) -> tuple[list[Path], np.ndarray]:
        classes = cls.class_names(opts)
        paths, labels = [], []
        for k, c in enumerate(classes):
            folder = cls._root(opts) / domain / c
            if folder.is_dir():
                found = sorted(
                    p
                    for p in folder.iterdir()
                    if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
                )
                paths += found
                labels += [k] * len(found)
        if not paths:
            raise FileNotFoundError(
                f"no images under {cls._root(opts) / domain}/<class>/ ({', '.join(IMAGE_EXTS)})"
            )
        return paths, np.array(labels, dtype=np.int64)

    @classmethod
    def _checked(cls, paths: list[Path], opts) -> list[bytes | None]:
        """Each file's bytes as the training decoder reads them (`checked_bytes`), None for
        files nothing decodes."""
        from shiftray.data.images import _torchvision, checked_bytes  # torch: not for tables

        _torchvision()  # before the pool's threads (see shiftray.data.images._torchvision)
        with ThreadPoolExecutor(opts.threads) as pool:
            return list(pool.map(lambda p: checked_bytes(p.read_bytes()), paths))

    @classmethod
    def _unreadable(cls, domain: str, opts, bad: list[Path], total: int) -> None:
        names = "\n  ".join(str(p) for p in bad[:10]) + ("\n  ..." if len(bad) > 10 else "")
        if opts.on_bad_image == "error":
            raise UserInputError(
                f"{len(bad)} of {total} files under {cls._root(opts) / domain} are not "
                f"images any decoder reads (truncated or not an image):\n  {names}\n"
                "remove them, or leave them out with -o on_bad_image=skip"
            )
        print(f"skipping {len(bad)} unreadable files:\n  {names}", file=sys.stderr)

    @classmethod
    def read(cls, domain, split, opts):
        paths, labels = cls.files(domain, opts)
        blobs = cls._checked(paths, opts)
        bad = [p for p, b in zip(paths, blobs, strict=True) if b is None]
        if bad:
            cls._unreadable(domain, opts, bad, len(paths))
        keep = [i for i, b in enumerate(blobs) if b is not None]
        from shiftray.data.images import decode_images

        x = decode_images([blobs[i] for i in keep], opts.image_size)
        return DomainArrays(x, labels[keep], domain, split)

    @classmethod
    def encoded_tables(
        cls, domain: str, split: str, opts, seed: int = -1, chunk: int = 512
    ) -> Iterator[pa.Table]:
        """The domain as tables of encoded bytes (what `data prepare` writes), ``chunk`` files
        read and checked at a time, so that writing a domain holds one chunk in memory.
        ``seed`` >= 0: the rows in a random order drawn with it (the file list is permuted
        before reading). Unreadable files fail after every file is checked, all of them named
        (nothing more is yielded after the first), or are left out (``on_bad_image: skip``)."""
        paths, labels = cls.files(domain, opts)
        if seed >= 0:
            perm = np.random.default_rng([seed, len(paths)]).permutation(len(paths))
            paths, labels = [paths[i] for i in perm], labels[perm]
        meta = {
            b"shiftray.input_shape": json.dumps([3, opts.image_size, opts.image_size]).encode(),
            b"shiftray.classes": json.dumps(cls.class_names(opts)).encode(),
            b"shiftray.input_encoding": b"image",
        }
        schema = ENCODED_SCHEMA.with_metadata(meta)
        bad: list[Path] = []
        for start in range(0, len(paths), chunk):
            part = paths[start : start + chunk]
            blobs = cls._checked(part, opts)
            bad += [p for p, b in zip(part, blobs, strict=True) if b is None]
            if bad and opts.on_bad_image == "error":
                continue  # check the rest, to name every unreadable file at once
            keep = [i for i, b in enumerate(blobs) if b is not None]
            n = len(keep)
            cols = [pa.array([blobs[i] for i in keep], pa.binary()),
                    pa.array(labels[start : start + chunk][keep], pa.int64()),
                    pa.array([domain] * n), pa.array([split] * n)]  # fmt: skip
            yield pa.Table.from_arrays(cols, schema=schema)
        if bad:
            cls._unreadable(domain, opts, bad, len(paths))
