"""CSV / JSONL / Parquet feature tables as domain tables.

- ``table``: one CSV, JSONL or Parquet file with numeric feature columns (all of them, or
  ``feature_columns``), a ``label`` column (integers 0..K-1 or class names; empty or -1 for
  unlabelled rows) and a ``domain`` column (optionally a ``split`` column). Parsed once by
  Arrow and turned into a float32 matrix by Arrow too (``RecordBatch.to_tensor``): labels and
  domains go through Python as their distinct values only, so 4,096 feature columns read in
  about the time Arrow parses them (bench/tables.py).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from shiftray.data.arrays import DomainArrays
from shiftray.data.readers.base import Benchmark, InputContract, ReaderOptions
from shiftray.errors import UserInputError


class TableOptions(ReaderOptions):
    reader = "table"
    renamed = {
        "features": ("feature_columns", "the feature column names, e.g. -o feature_columns=[f0,f1]")
    }
    path: str = Field(..., description="a .csv, .tsv, .jsonl or .parquet file")
    feature_columns: list[str] | None = Field(
        None, description="feature columns, in this order (default: all numeric columns)"
    )
    label: str = "label"
    domain: str = "domain"
    split: str | None = Field(None, description="split column (default: every row in both splits)")
    classes: list[str] | None = Field(None, description="class names (default: 0..K-1)")
    text: str | None = Field(
        None, description="a text column: the inputs are its texts, tokenised by the hf/ backbone"
    )
    max_length: int = Field(128, ge=2, description="text: tokens per text (longer ones are cut)")
    ignore_columns: list[str] = Field(
        default_factory=list, description="columns that are neither features nor labels (ids, ...)"
    )


@dataclass
class _Parsed:
    table: pa.Table
    matrices: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict)  # by columns


def _read_file(path: str) -> _Parsed:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"data.options.path={path!r} does not exist")
    st = p.stat()
    return _parse(str(p.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=1)
def _parse(path: str, mtime_ns: int, size: int) -> _Parsed:
    """The file parsed by Arrow, once: `domains`, `class_names` and each domain's `read` (what
    `data prepare` and `data inspect` call in turn) share it, and its feature matrix, while the
    file is unchanged. The last file read stays in memory (``_parse.cache_clear()`` frees it)."""
    return _Parsed(_parse_table(path))


def _parse_table(path: str) -> pa.Table:
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        import pyarrow.json as pj

        try:
            return pj.read_json(path)
        except pa.ArrowInvalid as e:
            if "changed from" not in str(e):
                raise
            return _read_mixed_jsonl(Path(path), str(e))
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.read_table(path)
    import pyarrow.csv as pc

    # quoted cells may hold newlines (texts); .tsv: tab-separated
    sep = "\t" if suffix == ".tsv" else ","
    return pc.read_csv(path, parse_options=pc.ParseOptions(delimiter=sep, newlines_in_values=True))


def _read_mixed_jsonl(path: Path, why: str) -> pa.Table:
    """JSON lines whose values change type down a column (``"label": 3`` and ``"label": ""``
    for unlabelled rows), which Arrow's reader refuses: parsed line by line, each mixed
    column as text (null stays null; `_label_map` reads labels as text anyway)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    types: dict[str, set[type]] = {}
    for r in rows:
        for k, v in r.items():
            if v is not None:
                types.setdefault(k, set()).add(float if type(v) is int else type(v))
    mixed = {k for k, t in types.items() if len(t) > 1}
    for r in rows:
        for k in mixed & r.keys():
            if r[k] is not None:
                r[k] = str(r[k])
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise UserInputError(f"{path}: cannot read it as a table ({why}; then {e})") from None


_INT = re.compile(r"-?\d+(\.0+)?")


def _norm(v: Any) -> str:
    return "" if v is None else str(v).strip()


def _distinct(t: pa.Table, column: str) -> tuple[list[Any], np.ndarray]:
    """A column's distinct values (Python objects, None for an empty cell) and each row's
    index into them: a hash in Arrow, so only the distinct values reach Python."""
    enc = t.column(column).combine_chunks().dictionary_encode()
    values = enc.dictionary.to_pylist()
    nulls = enc.indices.null_count > 0
    idx = enc.indices.fill_null(len(values)) if nulls else enc.indices
    return values + [None] * nulls, idx.to_numpy(zero_copy_only=False).astype(np.int64)


def _check_columns(t: pa.Table, opts: TableOptions) -> None:
    names = set(t.schema.names)
    for col in (opts.label, opts.domain, opts.split, opts.text):
        if col is not None and col not in names:
            raise UserInputError(
                f"{opts.path}: no column {col!r}; its columns: {', '.join(t.column_names)}"
            )


def _label_map(t: pa.Table, opts: TableOptions) -> tuple[list[str], dict[str, int]]:
    """Class names and (normalised, `_norm`) label value -> index. Labels are class names, or
    integers 0..K-1 (also as strings, ``"3"``, or ``3.0``); ``classes`` names the classes (and
    their order): values that are all among those names map by name, else by index. Empty and
    -1 mean unlabelled (the scikit-learn convention)."""
    _check_columns(t, opts)
    raw = {_norm(v) for v in _distinct(t, opts.label)[0]}
    unlabelled = {v: -1 for v in raw if v == "" or (_INT.fullmatch(v) and int(float(v)) == -1)}
    values = raw - set(unlabelled)
    if not values:
        raise UserInputError(f"{opts.path}: column {opts.label!r} has no labelled row")
    if opts.classes and values <= set(opts.classes):
        return opts.classes, {n: i for i, n in enumerate(opts.classes)} | unlabelled
    if all(_INT.fullmatch(v) for v in values):
        ints = {v: int(float(v)) for v in values}
        k = len(opts.classes) if opts.classes else max(ints.values()) + 1
        wrong = sorted({i for i in ints.values() if not 0 <= i < k})
        if wrong:
            raise UserInputError(
                f"{opts.path}: labels {wrong[:10]} are outside 0..{k - 1}"
                + (f" (classes: {len(opts.classes)} names)" if opts.classes else "")
            )
        return opts.classes or [str(i) for i in range(k)], ints | unlabelled
    names = opts.classes or sorted(values)
    unknown = sorted(values - set(names))
    if unknown:
        raise UserInputError(f"{opts.path}: labels {unknown[:10]} are not in classes {names}")
    return names, {n: i for i, n in enumerate(names)} | unlabelled


def _rows_where(t: pa.Table, column: str, value: str) -> np.ndarray:
    """Mask of the rows whose ``column`` reads ``value`` (compared as text)."""
    values, idx = _distinct(t, column)
    return np.array([str(v) == value for v in values], dtype=bool)[idx]


def _feature_columns(t: pa.Table, opts: TableOptions) -> list[str]:
    reserved = {opts.label, opts.domain, opts.split, opts.text, *opts.ignore_columns}
    cols = opts.feature_columns or [
        name
        for name, type_ in zip(t.schema.names, t.schema.types, strict=True)
        if name not in reserved and _is_number(type_)
    ]
    if not cols:
        raise UserInputError(
            f"{opts.path}: no numeric feature column (columns: {', '.join(t.column_names)}); "
            "name them with -o feature_columns=[...] or write numbers in them"
        )
    names = set(t.schema.names)
    if both := sorted(set(cols) & set(opts.ignore_columns)):
        raise UserInputError(
            f"{opts.path}: {both} are feature columns and ignore_columns (a task's labels?)"
        )
    if missing := [c for c in cols if c not in names]:
        raise UserInputError(f"{opts.path}: feature_columns {missing[:10]} are not columns of it")
    return cols


def _features(parsed: _Parsed, cols: list[str], path: str) -> np.ndarray:
    """(N, F) float32 of the feature columns, in their order; empty cells come back as NaN.
    Arrow writes each record batch as one matrix (`RecordBatch.to_tensor`, column-major: a
    copy of each column), NumPy transposes it into the row-major float32 result: no Python per
    row or per column. Computed once per file and columns (every domain's read masks it)."""
    if (x := parsed.matrices.get(tuple(cols))) is not None:
        return x
    t = parsed.table
    x = np.empty((t.num_rows, len(cols)), np.float32)
    start = 0
    try:
        for b in t.select(cols).to_batches():
            if b.num_rows:
                x[start : start + b.num_rows] = np.asarray(
                    b.to_tensor(null_to_nan=True, row_major=False)
                )
                start += b.num_rows
    except (TypeError, pa.ArrowException) as e:
        bad = [c for c in cols if not _is_number(t.schema.field(c).type)]
        raise UserInputError(
            f"{path}: feature columns {bad[:10] or cols[:10]} are not all numeric: {e}"
        ) from None
    parsed.matrices[tuple(cols)] = x
    return x


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


class TableFile(Benchmark):
    """A CSV / JSONL / Parquet file: numeric features, label and domain columns."""

    name = "table"
    Options = TableOptions

    @classmethod
    def domains(cls, opts):
        if not Path(opts.path).expanduser().is_file():
            return None
        t = _read_file(opts.path).table
        _check_columns(t, opts)
        return sorted({str(v) for v in _distinct(t, opts.domain)[0]})

    @classmethod
    def input_contract(cls, opts, input_shape) -> InputContract:
        """Texts when ``text`` names a column, else any finite feature vector."""
        if opts.text is not None:
            return InputContract("text", tuple(input_shape), dtype="int64")
        return super().input_contract(opts, input_shape)

    @classmethod
    def class_names(cls, opts):
        return _label_map(_read_file(opts.path).table, opts)[0]

    @classmethod
    def read(cls, domain, split, opts):
        parsed = _read_file(opts.path)
        t = parsed.table
        names, index = _label_map(t, opts)
        mask = _rows_where(t, opts.domain, domain)
        if opts.split is not None:
            mask &= _rows_where(t, opts.split, split)
        if opts.text is not None:  # texts: `load_domain_data` tokenises them for the backbone
            x = np.asarray(["" if v is None else str(v) for v in t.column(opts.text).to_pylist()],
                           dtype=object)[mask]  # fmt: skip
        else:  # masking the matrix: Table.filter is 20x slower on wide tables
            cols = _feature_columns(t, opts)
            x = _check_finite(_features(parsed, cols, opts.path)[mask], cols, opts.path, domain)
        values, idx = _distinct(t, opts.label)
        ids = np.array([index[_norm(v)] for v in values], np.int64)[idx[mask]]
        y = None if (ids == -1).all() else ids
        return DomainArrays(x, y, domain, split)

    @classmethod
    def task_labels(cls, domain, split, opts, column):
        """Another label column (a multi-task job's extra task): its class indices for the rows
        `read` returns, -1 where empty, and its class names."""
        t = _read_file(opts.path).table
        other = opts.model_copy(update={"label": column, "classes": None})
        _check_columns(t, other)
        names, index = _label_map(t, other)
        mask = _rows_where(t, opts.domain, domain)
        if opts.split is not None:
            mask &= _rows_where(t, opts.split, split)
        values, idx = _distinct(t, column)
        return np.array([index[_norm(v)] for v in values], np.int64)[idx[mask]], names


def _check_finite(x: np.ndarray, cols: list[str], path: str, domain: str) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        empty = [c for i, c in enumerate(cols) if not np.isfinite(x[:, i]).all()]
        raise UserInputError(
            f"{path}: {len(bad)} row(s) of domain {domain!r} have empty or non-finite "
            f"features (columns {empty[:10]}); fill them or drop those rows"
        )
    return x
