"""Domain tables written by `shiftray data prepare` (or by you, in the same schema).

Layout: ``<dir>/<domain>/<split>.parquet`` or shards ``<dir>/<domain>/<split>-00000.parquet``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from shiftray.data.readers.base import Benchmark
from shiftray.data.table import decode_table, shard_paths, table_meta


class ParquetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(..., description="directory with <domain>/<split>[-NNNNN].parquet")


class ParquetDomains(Benchmark):
    """Domain tables written by `shiftray data prepare` (or by you, in the same schema)."""

    name = "parquet"
    streamable = True
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
