"""Parquet domain tables on disk: what `shiftray data prepare` writes and jobs read back.

Layout: ``<dir>/<domain>/<split>.parquet`` or shards ``<dir>/<domain>/<split>-00000.parquet``,
each in the schema of `shiftray.data.formats` (or with ``input`` as encoded image bytes, marked
by ``shiftray.input_encoding: image`` in the schema metadata, decoded when read).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from shiftray.data.benchmarks import Benchmark
from shiftray.data.formats import DomainArrays, from_table, label_array, table_meta


def write_table(
    table: pa.Table, root: str | Path, domain: str, split: str, shard_rows: int = 0
) -> list[Path]:
    """Write one domain split; ``shard_rows`` > 0 splits it into shards of that many rows (one
    file when it fits in one). All or nothing, as `write_shards`: an error or a kill part-way
    leaves the split's previous files as they were."""
    one = shard_rows <= 0 or len(table) <= shard_rows
    return write_shards([table], root, domain, split, 0 if one else shard_rows)[0]


def write_shards(
    tables: Iterable[pa.Table], root: str | Path, domain: str, split: str, shard_rows: int = 0
) -> tuple[list[Path], int]:
    """Write one domain split from a stream of tables (each a Parquet row group), a new file
    every ``shard_rows`` rows (0: one file), holding one table in memory at a time.

    The files are written into a hidden directory and moved into place only when all are
    complete; then the split's old files not among the new names are removed. An error while
    writing changes nothing. No rows at all: one empty file with the schema (the domain stays
    readable). Returns the paths and the row count."""
    folder = Path(root).expanduser() / domain
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f".{split}.writing-*"):  # left by a killed prepare
        shutil.rmtree(stale, ignore_errors=True)
    tmp = folder / f".{split}.writing-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()

    def name(k: int) -> str:
        return f"{split}-{k:05d}.parquet" if shard_rows > 0 else f"{split}.parquet"

    names: list[str] = []
    writer, in_file, rows, schema = None, 0, 0, None
    try:
        for table in tables:
            schema = table.schema
            while len(table):
                if writer is None:
                    names.append(name(len(names)))
                    writer = pq.ParquetWriter(tmp / names[-1], table.schema)
                room = len(table) if shard_rows <= 0 else shard_rows - in_file
                part, table = table.slice(0, room), table.slice(room)
                writer.write_table(part)
                in_file, rows = in_file + len(part), rows + len(part)
                if shard_rows > 0 and in_file == shard_rows:
                    writer.close()
                    writer, in_file = None, 0
        if writer is not None:
            writer.close()
            writer = None
        if not names:
            if schema is None:
                raise ValueError(f"nothing to write for {domain}/{split}: no table at all")
            names.append(name(0))
            pq.write_table(schema.empty_table(), tmp / names[0])
        old = [p for p in shard_paths(folder.parent, domain, split) if p.name not in names]
        for n in names:  # the new files in first, then the old ones out
            os.replace(tmp / n, folder / n)
        for p in old:
            p.unlink()
    finally:
        if writer is not None:
            writer.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return [folder / n for n in names], rows


def shard_paths(root: str | Path, domain: str, split: str) -> list[Path]:
    folder = Path(root).expanduser() / domain
    return sorted(
        p
        for p in folder.glob(f"{split}*.parquet")
        if p.stem == split or p.stem.startswith(f"{split}-")
    )


def decode_table(table: pa.Table, lazy_images: bool = False) -> DomainArrays:
    """Table -> arrays; encoded images decoded now, or (``lazy_images``) kept encoded as
    `EncodedImages`, decoded a batch at a time when indexed."""
    meta = table.schema.metadata or {}
    if meta.get(b"shiftray.input_encoding") == b"image":
        from shiftray.data.images import EncodedImages, decode_images

        shape = json.loads(meta[b"shiftray.input_shape"])
        blobs = table.column("input").to_pylist()
        x = EncodedImages(blobs, shape[-1]) if lazy_images else decode_images(blobs, shape[-1])
        y = label_array(table.column("label"))
        domain = table.column("domain")[0].as_py() if len(table) else ""
        return DomainArrays(x, y, domain, table.column("split")[0].as_py() if len(table) else "")
    return from_table(table)


class ParquetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(..., description="directory with <domain>/<split>[-NNNNN].parquet")


class ParquetDomains(Benchmark):
    """Domain tables written by `shiftray data prepare` (or by you, in the same schema)."""

    name = "parquet"
    Options = ParquetOptions

    @classmethod
    def domains(cls, opts):
        root = Path(opts.path).expanduser()
        if not root.is_dir():
            return None  # checked again, with a full message, when the data is read
        return sorted(
            p.name for p in root.iterdir() if p.is_dir() and shard_paths(root, p.name, "train")
        )

    @classmethod
    def load(cls, domain, split, options=None):
        opts = cls.Options.model_validate(options or {})
        paths = shard_paths(opts.path, domain, split)
        if not paths and split == "test":  # a domain written once (image folders): used whole
            paths = shard_paths(opts.path, domain, "train")
        if not paths:
            raise FileNotFoundError(
                f"no parquet domain table {Path(opts.path) / domain}/{split}[-NNNNN].parquet; write it "
                f"with `shiftray data prepare BENCHMARK --out {opts.path}`"
            )
        tables = [pq.read_table(p) for p in paths]
        return pa.concat_tables(tables).replace_schema_metadata(tables[0].schema.metadata)

    @classmethod
    def read(cls, domain, split, opts, lazy_images: bool = False):
        return decode_table(cls.load(domain, split, opts.model_dump()), lazy_images)

    @classmethod
    def class_names(cls, opts):
        root = Path(opts.path).expanduser()
        for d in cls.domains(opts) or []:
            return table_meta(pq.read_table(shard_paths(root, d, "train")[0]))[1]
        raise FileNotFoundError(f"no <domain>/train*.parquet under {root}")
