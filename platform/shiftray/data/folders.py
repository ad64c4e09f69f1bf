"""User data: image-folder trees and CSV / JSONL tables, as domain tables.

- ``imagefolder``: ``root/<domain>/<class>/*.jpg|png`` (the Office-31 / Office-Home / DomainNet
  layout). ``shiftray data prepare imagefolder -o root=DIR --out OUT`` stores each image as its
  encoded bytes (``input`` is binary, decoded in the workers); training reads decode them with
  a thread pool and resize to ``image_size``. Every domain is used whole (transductive).
- ``table``: one CSV or JSONL file with numeric feature columns, a ``label`` column (empty for
  unlabelled rows) and a ``domain`` column (optionally a ``split`` column).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from shiftray.data.benchmarks import Benchmark
from shiftray.data.formats import DomainArrays
from shiftray.data.images import decode_images
from shiftray.registry import DATASETS

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

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


@DATASETS.register("imagefolder")
class ImageFolder(Benchmark):
    """Image-folder trees root/<domain>/<class>/*.jpg (Office-31, Office-Home, DomainNet)."""

    name = "imagefolder"
    Options = ImageFolderOptions

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
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else None

    @classmethod
    def class_names(cls, opts):
        root = cls._root(opts)
        return sorted(
            {c.name for d in root.iterdir() if d.is_dir() for c in d.iterdir() if c.is_dir()}
        )

    @classmethod
    def files(cls, domain: str, opts) -> tuple[list[Path], np.ndarray]:
        classes = cls.class_names(opts)
        paths, labels = [], []
        for k, c in enumerate(classes):
            folder = cls._root(opts) / domain / c
            if folder.is_dir():
                found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
                paths += found
                labels += [k] * len(found)
        if not paths:
            raise FileNotFoundError(
                f"no images under {cls._root(opts) / domain}/<class>/ ({', '.join(IMAGE_EXTS)})"
            )
        return paths, np.array(labels, dtype=np.int64)

    @classmethod
    def read(cls, domain, split, opts):
        paths, labels = cls.files(domain, opts)
        x = decode_images([p.read_bytes() for p in paths], opts.image_size)
        return DomainArrays(x, labels, domain, split)

    @classmethod
    def encoded_table(cls, domain: str, split: str, opts) -> pa.Table:
        """The domain as encoded bytes (what `data prepare` writes)."""
        paths, labels = cls.files(domain, opts)
        meta = {
            b"shiftray.input_shape": json.dumps([3, opts.image_size, opts.image_size]).encode(),
            b"shiftray.classes": json.dumps(cls.class_names(opts)).encode(),
            b"shiftray.input_encoding": b"image",
        }
        n = len(paths)
        cols = [pa.array([p.read_bytes() for p in paths], pa.binary()), pa.array(labels, pa.int64()),
                pa.array([domain] * n), pa.array([split] * n)]  # fmt: skip
        return pa.Table.from_arrays(cols, schema=ENCODED_SCHEMA.with_metadata(meta))


class TableOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(..., description="a .csv or .jsonl file")
    features: list[str] | None = Field(None, description="feature columns (default: all numeric)")
    label: str = "label"
    domain: str = "domain"
    split: str | None = Field(None, description="split column (default: every row in both splits)")
    classes: list[str] | None = Field(None, description="class names (default: 0..K-1)")


def _read_file(path: str) -> pa.Table:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"data.options.path={path!r} does not exist")
    if p.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        import pyarrow.json as pj

        return pj.read_json(p)
    import pyarrow.csv as pc

    return pc.read_csv(p)


@DATASETS.register("table")
class TableFile(Benchmark):
    """A CSV / JSONL file: numeric features, label and domain columns."""

    name = "table"
    Options = TableOptions

    @classmethod
    def domains(cls, opts):
        if not Path(opts.path).expanduser().is_file():
            return None
        return sorted({str(v) for v in _read_file(opts.path).column(opts.domain).to_pylist()})

    @classmethod
    def class_names(cls, opts):
        if opts.classes:
            return opts.classes
        labels = [v for v in _read_file(opts.path).column(opts.label).to_pylist() if v is not None]
        return [str(i) for i in range(int(max(labels)) + 1)]

    @classmethod
    def read(cls, domain, split, opts):
        t = _read_file(opts.path)
        mask = np.array([str(v) == domain for v in t.column(opts.domain).to_pylist()])
        if opts.split is not None:
            mask &= np.array([str(v) == split for v in t.column(opts.split).to_pylist()])
        reserved = {opts.label, opts.domain, opts.split}
        cols = opts.features or [
            f.name
            for f in t.schema
            if f.name not in reserved
            and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
        ]
        x = np.stack(
            [t.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in cols], axis=1
        )[mask]
        raw = [t.column(opts.label)[int(i)].as_py() for i in np.flatnonzero(mask)]
        y = (
            None
            if all(v is None for v in raw)
            else np.array([-1 if v is None else int(v) for v in raw], np.int64)
        )
        return DomainArrays(x, y, domain, split)
