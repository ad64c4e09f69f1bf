"""The reader contract: a registered benchmark -> domain splits as arrays.

Each benchmark declares its domains, its reader options (a pydantic model, so job specs are
validated), its files (with original sources and checksums) and how a domain split is read.
"""

from __future__ import annotations

import bz2
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, model_validator

from shiftray.data.arrays import DomainArrays
from shiftray.data.table import to_table
from shiftray.errors import UserInputError

GH = "https://raw.githubusercontent.com"


class ReaderOptions(BaseModel):
    """A reader's options: unknown keys fail, and an option given under an old name (``renamed``:
    old -> (new, what it is)) fails naming the new one. One name, one meaning across readers:
    ``feature_columns`` is a column list, ``data.normalize`` the job's feature transform, and
    reader-specific transforms have names of their own (amazon ``transform``, office_caltech
    ``domain_normalize``)."""

    model_config = ConfigDict(extra="forbid")
    reader: ClassVar[str] = ""
    renamed: ClassVar[dict[str, tuple[str, str]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _refuse_renamed(cls, data: Any) -> Any:
        for old, (new, what) in cls.renamed.items():
            if isinstance(data, dict) and old in data:
                raise UserInputError(
                    f"{cls.reader} option `{old}` is now `{new}` ({what}); rename it"
                )
        return data


class NoOptions(ReaderOptions):
    pass


class Benchmark:
    """Base: subclasses set ``name``, ``Options``, ``classes`` and implement ``read``."""

    name: str = ""
    Options: type[BaseModel] = NoOptions
    classes: list[str] = []
    splits: tuple[str, ...] = ("train", "test")

    @classmethod
    def domains(cls, opts: BaseModel) -> list[str] | None:
        raise NotImplementedError

    @classmethod
    def read(cls, domain: str, split: str, opts: BaseModel) -> DomainArrays:
        raise NotImplementedError

    @classmethod
    def task_labels(cls, domain: str, split: str, opts: BaseModel, column: str
                    ) -> tuple[np.ndarray, list[str]]:  # fmt: skip
        """A multi-task job's extra labels (`column`), aligned with `read`'s rows, and their
        class names. Benchmarks with one label have none."""
        raise UserInputError(
            f"tasks: benchmark {cls.name!r} has one label per example; extra tasks read label "
            f"columns of a table (benchmark: table, tasks[].label: {column!r})"
        )

    @classmethod
    def load(cls, domain: str, split: str, options: dict | None = None) -> pa.Table:
        opts = cls.Options.model_validate(options or {})
        arrays = cls.read(domain, split, opts)
        return to_table(arrays, cls.class_names(opts))

    @classmethod
    def class_names(cls, opts: BaseModel) -> list[str]:
        return list(cls.classes)


def read_libsvm_dense(
    path: Path, n_features: int, zero_based: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Parse svmlight/LIBSVM text (optionally .bz2) into a dense float32 matrix and labels."""
    opener = bz2.open if path.suffix == ".bz2" else open
    with opener(path, "rt") as f:
        lines = [ln.split() for ln in f if ln.strip()]
    x = np.zeros((len(lines), n_features), dtype=np.float32)
    y = np.empty(len(lines), dtype=np.float64)
    off = 0 if zero_based else 1
    for i, parts in enumerate(lines):
        y[i] = float(parts[0])
        if len(parts) > 1:
            pairs = np.array([p.split(":") for p in parts[1:]], dtype=np.float64)
            x[i, pairs[:, 0].astype(np.int64) - off] = pairs[:, 1]
    return x, y
