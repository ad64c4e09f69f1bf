"""The job-spec reference, generated from the pydantic schema (`shiftray reference`).

The copy in docs/job-spec.md is this output, checked by a test, so the table cannot drift from
what the schema accepts: every field with its default, allowed values and description; then each
registered dataset's reader options and each method's parameters.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from shiftray.config.schema import JobSpec


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field holds (directly, or in an Optional / list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models(a)]


def _allowed(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [v for a in typing.get_args(annotation) for v in _allowed(a)]


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default is PydanticUndefined else field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "none"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return f"{len(value)} entries"
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        keyed = typing.get_origin(field.annotation) is dict  # its values are described inline
        nested = [] if keyed else [m for m in _models(field.annotation) if m is not JobSpec]
        allowed = _allowed(field.annotation)
        meaning = field.description or ""
        if not meaning and nested:  # a section: the first paragraph of its docstring
            meaning = (nested[0].__doc__ or "").strip().split("\n\n")[0]
        if allowed:
            union = typing.get_origin(field.annotation) in (typing.Union, types.UnionType)
            mixed = union and any(
                typing.get_origin(a) is not typing.Literal and a is not type(None)
                for a in typing.get_args(field.annotation)
            )
            lead = "a number or " if mixed else "one of "
            meaning = f"{meaning}; {lead}" if meaning else lead
            meaning += ", ".join(f"`{a}`" for a in allowed)
        rows.append((f"`{path}`", _default(field), _cell(meaning)))
        for sub in nested:
            rows += _rows(sub, f"{path}.")
    return rows


def components() -> list[tuple[str, str, str]]:
    """Each dataset's reader options and each method's parameters (imports them all)."""
    from shiftray.registry import DATASETS, METHODS

    out = []
    for kind, reg, attr in (("dataset", DATASETS, "Options"), ("method", METHODS, "Params")):
        for name in reg.names():
            fields = getattr(reg.get(name), attr).model_fields
            items = ", ".join(f"`{f}` ({_default(fi).strip('`')})" for f, fi in fields.items())
            out.append((kind, f"`{name}`", items or "none"))
    return out


def spec_reference() -> str:
    lines = ["| field | default | meaning |", "|---|---|---|"]
    lines += [f"| {p} | {d} | {m} |" for p, d, m in _rows(JobSpec, "")]
    lines += ["", "| kind | name | `data.options` / `method.params` (default) |", "|---|---|---|"]
    lines += [f"| {k} | {n} | {_cell(i)} |" for k, n, i in components()]
    return "\n".join(lines) + "\n"
