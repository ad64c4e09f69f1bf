"""`shiftray data prepare`: any registered benchmark written as Parquet domain tables.

Train rows are written in a seeded random order: streaming shuffles only within windows of rows
(``data.stream.shuffle_buffer``), and rows written class by class would give batches of two or
three classes. Image folders keep their encoded bytes and are written a chunk at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shiftray.data.table import shard_paths, to_table, write_shards, write_table


@dataclass(frozen=True)
class Written:
    domain: str
    split: str
    paths: list[Path]
    rows: int


def prepare(
    bench, opts, out: str | Path, domains: list[str], shard_rows: int = 0, seed: int = 0
) -> Iterator[Written]:
    """Write each domain's splits under ``out``; yields what each split wrote. ``seed`` < 0
    keeps the reader's row order."""
    for d in domains:
        for split in bench.splits:
            s = seed if split == "train" else -1
            if hasattr(bench, "encoded_tables"):  # images stay encoded, a chunk at a time
                tables = bench.encoded_tables(d, split, opts, s)
                paths, rows = write_shards(tables, out, d, split, shard_rows)
            else:
                table = to_table(bench.read(d, split, opts), bench.class_names(opts))
                if s >= 0:
                    perm = np.random.default_rng([s, len(table)]).permutation(len(table))
                    table = table.take(perm)
                paths, rows = write_table(table, out, d, split, shard_rows), len(table)
            yield Written(d, split, paths, rows)
        for split in {"train", "test"} - set(bench.splits):  # e.g. image folders: no test files
            for old in shard_paths(out, d, split):  # an earlier prepare's would be read
                old.unlink()
