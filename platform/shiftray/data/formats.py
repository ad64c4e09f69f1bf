"""The one table schema for domain data, and conversions between tables and arrays.

Every reader (benchmarks, Parquet, generated data) produces a ``pyarrow.Table`` with:

- ``input``:  list<float32>, the example flattened row-major; its shape is in the metadata
- ``label``:  int64, nullable (unlabelled target data has nulls)
- ``domain``: string
- ``split``:  string (``train`` / ``test``)

and schema metadata ``shiftray.input_shape`` (JSON list) and ``shiftray.classes`` (JSON list).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

MAX_LIST_VALUES = 2**31 - 1  # what one chunk of a list<> column (int32 offsets) can address

SCHEMA = pa.schema(
    [
        pa.field("input", pa.list_(pa.float32()), nullable=False),
        pa.field("label", pa.int64(), nullable=True),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
)


@dataclass
class DomainArrays:
    """One labelled (or label-less test) domain split in memory: inputs ``x`` (N, *shape)
    float32, labels ``y`` (N,) or None. ``x`` can also be `EncodedImages` (a streamed job's
    test split): indexing it decodes."""

    x: np.ndarray  # or shiftray.data.images.EncodedImages
    y: np.ndarray | None
    domain: str = ""
    split: str = ""

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def without_labels(self) -> UnlabelledArrays:
        return UnlabelledArrays(self.x, self.domain, self.split)


@dataclass
class UnlabelledArrays:
    """The unlabelled target training split: inputs only. It has no ``y`` at all, so nothing
    between the reader and the method can read a target label; evaluation reads the target's
    labels from ``DomainData.target_test``, for reporting."""

    x: np.ndarray  # or EncodedImages
    domain: str = ""
    split: str = ""

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class DomainData:
    """What a training job needs: labelled source (None for source-free methods), unlabelled
    target, labelled target test; a held-out labelled source split (``data.source_val_fraction``)
    and, for streamed jobs, what the workers need to know about the shards (``stream``, a
    `shiftray.data.streaming.StreamInfo`; the training splits are then empty here)."""

    source: DomainArrays | None
    target: UnlabelledArrays
    target_test: DomainArrays
    classes: list[str]
    input_shape: tuple[int, ...]
    source_val: DomainArrays | None = None
    stream: Any = None
    normalization: Any = None  # data.normalize fitted on the training rows (data.normalize)

    def __post_init__(self) -> None:
        if isinstance(self.target, DomainArrays):  # the guarantee: no target label gets past
            self.target = self.target.without_labels()

    @property
    def num_classes(self) -> int:
        return len(self.classes)


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
    labels = pa.nulls(n, pa.int64()) if arrays.y is None else pa.array(arrays.y, pa.int64())
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
        raise ValueError(
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
