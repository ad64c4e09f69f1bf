"""The reader contract: a registered benchmark -> domain splits as arrays.

Each benchmark declares its domains, its reader options (a pydantic model, so job specs are
validated), its files (with original sources and checksums), how a domain split is read, and
what one input is (`Benchmark.input_contract`: written into every checkpoint, read by serving).
"""

from __future__ import annotations

import bz2
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

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


Bound = float | None  # one end of a value range; None: open
C = TypeVar("C", bound="InputContract")


@dataclass(frozen=True)
class InputContract:
    """What one input of a model is, as its reader gave it to training. Training writes it into
    the checkpoint (labels.json ``"input"``, `to_json`) and serving takes exactly that, so that
    no one guesses it from a benchmark's or backbone's name.

    - ``kind``: ``image`` (C, S, S), ``vector`` (D,), ``text`` (L,) token ids of ``tokenizer``
      (the backbone's), ``tensor`` (any other shape; not served);
    - ``resize``: how an image of another size fits S x S: ``fit`` (its centre square, resized:
      `shiftray.data.images.fit_square`), ``stretch`` (the whole image, bilinear, as
      `shiftray.data.readers.digits.resize_square`) or ``none`` (refused);
    - ``range``: (low, high) of every value, None at an open end; None: any finite value.
    """

    kind: Literal["image", "vector", "text", "tensor"]
    shape: tuple[int, ...]
    resize: Literal["stretch", "fit", "none"] = "none"
    dtype: str = "float32"
    tokenizer: str = ""
    range: tuple[Bound, Bound] | None = None

    @classmethod
    def from_shape(cls, input_shape: tuple[int, ...] | list[int]) -> InputContract:
        """The default: (D,) any finite vector; (C, S, S) an image in [0, 1], fitted."""
        shape = tuple(int(s) for s in input_shape)
        if len(shape) == 3:
            return cls("image", shape, "fit", range=(0.0, 1.0))
        return cls("vector" if len(shape) == 1 else "tensor", shape)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(InputContract)} | {
            "shape": list(self.shape), "range": None if self.range is None else list(self.range)
        }  # fmt: skip

    @classmethod
    def from_json(cls: type[C], raw: dict[str, Any]) -> C:
        """The contract ``to_json`` wrote (as ``cls``: serving's `InputSpec` is one)."""
        known = {f.name for f in fields(InputContract)}
        out = {k: v for k, v in raw.items() if k in known}  # keys a later version adds: ignored
        rng = out.get("range")
        out |= {"shape": tuple(int(s) for s in out["shape"]),
                "range": None if rng is None else (rng[0], rng[1])}  # fmt: skip
        return cls(**out)


def job_input_contract(benchmark: str, options: dict[str, Any] | None, backbone: str,
                       input_shape: tuple[int, ...] | list[int]) -> InputContract:  # fmt: skip
    """What a model trained on ``benchmark`` (``options``; None: the defaults, unvalidated) with
    ``backbone`` takes: its reader's contract (`Benchmark.input_contract`), a text one when the
    backbone reads texts (its tokenizer, `shiftray.models.text.tokenizer_of`): a reader of
    tables cannot know that its column holds token ids."""
    from shiftray.models.text import tokenizer_of
    from shiftray.registry import DATASETS

    bench = DATASETS.get(benchmark)
    Options = bench.Options
    opts = Options.model_construct() if options is None else Options.model_validate(options)
    contract = bench.input_contract(opts, tuple(int(s) for s in input_shape))
    tokenizer = tokenizer_of(backbone)
    if not tokenizer:
        return contract
    return replace(contract, kind="text", resize="none", dtype="int64", tokenizer=tokenizer,
                   range=None)  # fmt: skip


class Benchmark:
    """Base: subclasses set ``name``, ``Options``, ``classes`` and implement ``read``."""

    name: str = ""
    streamable: bool = False  # its domains are Parquet shards Ray Data can stream (data.stream)
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
    def input_contract(cls, opts: BaseModel, input_shape: tuple[int, ...]) -> InputContract:
        """What one input read with ``opts`` is (its shape: the data's): by default
        `InputContract.from_shape`; readers say more (digits stretch, texts, value ranges)."""
        return InputContract.from_shape(input_shape)

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
