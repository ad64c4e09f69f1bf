"""Parquet domain tables on disk: what `shiftray data prepare` writes and jobs can read back.

Layout: ``<dir>/<domain>/<split>.parquet``, each in the schema of `shiftray.data.formats`.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from shiftray.data.benchmarks import Benchmark
from shiftray.data.formats import from_table, table_meta
from shiftray.registry import DATASETS


def write_table(table: pa.Table, root: str | Path, domain: str, split: str) -> Path:
    path = Path(root) / domain / f"{split}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


class ParquetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(..., description="directory with <domain>/<split>.parquet")


@DATASETS.register("parquet")
class ParquetDomains(Benchmark):
    """Domain tables written by `shiftray data prepare` (or by you, in the same schema)."""

    name = "parquet"
    Options = ParquetOptions

    @classmethod
    def domains(cls, opts):
        root = Path(opts.path).expanduser()
        if not root.is_dir():
            return None  # checked again, with a full message, when the data is read
        return sorted(p.name for p in root.iterdir() if (p / "train.parquet").is_file())

    @classmethod
    def _path(cls, domain, split, opts) -> Path:
        path = Path(opts.path).expanduser() / domain / f"{split}.parquet"
        if not path.is_file():
            raise FileNotFoundError(
                f"parquet domain table {path} does not exist; write it with "
                f"`shiftray data prepare BENCHMARK --out {opts.path}`"
            )
        return path

    @classmethod
    def read(cls, domain, split, opts):
        return from_table(pq.read_table(cls._path(domain, split, opts)))

    @classmethod
    def load(cls, domain, split, options=None):
        opts = cls.Options.model_validate(options or {})
        return pq.read_table(cls._path(domain, split, opts))

    @classmethod
    def class_names(cls, opts):
        root = Path(opts.path).expanduser()
        first = next(iter(sorted(root.glob("*/train.parquet"))), None)
        if first is None:
            raise FileNotFoundError(f"no <domain>/train.parquet under {root}")
        return table_meta(pq.read_table(first))[1]
