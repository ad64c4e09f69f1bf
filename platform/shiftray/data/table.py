"""The domain-table schema (pyarrow), conversions between tables and arrays, and Parquet I/O.

Every reader (benchmarks, Parquet, generated data) produces a ``pyarrow.Table`` with:

- ``input``:  list<float32>, the example flattened row-major; its shape is in the metadata
- ``label``:  int64, nullable (unlabelled target data has nulls)
- ``domain``: string
- ``split``:  string (``train`` / ``test``)

and schema metadata ``shiftray.input_shape`` (JSON list) and ``shiftray.classes`` (JSON list).

On disk, what `shiftray data prepare` writes and jobs read back: ``<dir>/<domain>/<split>.parquet`` or shards ``<dir>/<domain>/<split>-00000.parquet``,
each in the schema above (or with ``input`` as encoded image bytes, marked
by ``shiftray.input_encoding: image`` in the schema metadata, decoded when read).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shiftray.data.arrays import DomainArrays
from shiftray.errors import UserInputError

MAX_LIST_VALUES = 2**31 - 1  # what one chunk of a list<> column (int32 offsets) can address


SCHEMA = pa.schema(
    [
        pa.field("input", pa.list_(pa.float32()), nullable=False),
        pa.field("label", pa.int64(), nullable=True),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
)


def to_table(
    arrays: DomainArrays, classes: list[str], input_shape: tuple[int, ...] | None = None
) -> pa.Table:
    """Arrays -> a table in `SCHEMA`. The ``input`` column is chunked so that each chunk's
    32-bit list offsets stay below 2**31 values (60,000 RGB images at 224 px are 9e9)."""
    x = np.ascontiguousarray(arrays.x, dtype=np.float32)
    n = x.shape[0]
    shape = tuple(input_shape or x.shape[1:])
    size = int(np.prod(shape))
    flat = x.reshape(-1)
    per_chunk = max(1, MAX_LIST_VALUES // max(size, 1))
    chunks = []
    for start in range(0, n, per_chunk):
        rows = min(per_chunk, n - start)
        offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * size, type=pa.int32())
        values = pa.array(flat[start * size : (start + rows) * size], type=pa.float32())
        chunks.append(pa.ListArray.from_arrays(offsets, values))
    inputs = pa.chunked_array(chunks, type=pa.list_(pa.float32()))
    y = getattr(arrays, "y", None)  # UnlabelledArrays have none: null labels
    labels = pa.nulls(n, pa.int64()) if y is None else pa.array(y, pa.int64())
    meta = {
        b"shiftray.input_shape": json.dumps(list(shape)).encode(),
        b"shiftray.classes": json.dumps(list(classes)).encode(),
    }
    return pa.Table.from_arrays(
        [inputs, labels, pa.array([arrays.domain] * n), pa.array([arrays.split] * n)],
        schema=SCHEMA.with_metadata(meta),
    )


def label_array(labels: pa.ChunkedArray) -> np.ndarray | None:
    """The label column as int64 with -1 for nulls (unlabelled rows), None when all are null."""
    if labels.null_count == len(labels):
        return None
    return labels.fill_null(-1).to_numpy().astype(np.int64, copy=False)


def table_meta(table: pa.Table) -> tuple[tuple[int, ...], list[str]]:
    meta = table.schema.metadata or {}
    try:
        shape = tuple(json.loads(meta[b"shiftray.input_shape"]))
        classes = list(json.loads(meta[b"shiftray.classes"]))
    except KeyError as e:
        raise UserInputError(
            f"table lacks shiftray metadata {e.args[0]!r}; write it with shiftray data prepare"
        ) from None
    return shape, classes


def from_table(table: pa.Table) -> DomainArrays:
    shape, _ = table_meta(table)
    x = np.empty((len(table), *shape), np.float32)
    row = 0
    for chunk in table.column("input").chunks:  # chunk by chunk: no 2**31 offset overflow
        values = chunk.flatten().to_numpy(zero_copy_only=False)
        x[row : row + len(chunk)] = values.reshape(len(chunk), *shape)
        row += len(chunk)
    y = label_array(table.column("label"))
    domain = table.column("domain")[0].as_py() if len(table) else ""
    split = table.column("split")[0].as_py() if len(table) else ""
    return DomainArrays(x, y, domain, split)


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
