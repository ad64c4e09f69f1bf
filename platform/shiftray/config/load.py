"""YAML + dotted overrides -> validated JobSpec, with errors a person can act on."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from shiftray.config.schema import JobSpec
from shiftray.errors import UserInputError
from shiftray.registry import DATASETS


class SpecError(UserInputError):
    """A job spec is invalid; the message names each bad field and what is allowed."""


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise SpecError(f"override {text!r} must look like section.field=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise SpecError(f"override {text!r} has an empty field name")
    try:
        return path, yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"override {text!r}: the value is not valid YAML ({problem}); quote a "
                        "string, or write a list as [a, b] and a mapping as {k: v}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise SpecError(f"override {text!r}: {part!r} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def _format(err: ValidationError, origin: str) -> str:
    lines = [f"invalid job spec {origin}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = "" if isinstance(got, dict) or e["type"] == "missing" else f" (got {got!r})"
        if e["type"] == "extra_forbidden" and (near := _near_fields(e["loc"])):
            msg += f"; did you mean {' or '.join(near)}?"
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def _near_fields(loc: tuple) -> list[str]:
    """The fields of the model at ``loc[:-1]`` closest in spelling to the unknown ``loc[-1]``."""
    import difflib
    import typing

    from pydantic import BaseModel

    model: Any = JobSpec
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        if field is None:
            return []
        kinds = [field.annotation, *typing.get_args(field.annotation)]
        model = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
        if model is None:
            return []
    return difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=2, cutoff=0.6)


def drop_foreign_options(
    raw: dict[str, Any], merged: dict[str, Any], overrides: list[str]
) -> dict[str, Any]:
    """When overrides change ``data.benchmark``, drop the spec file's reader options that the new
    benchmark does not have (digits' image_size under parquet), with a one-line notice on
    stderr naming them. Options the overrides set themselves are kept, and checked."""
    before = raw.get("data") if isinstance(raw, dict) else None
    old = before.get("benchmark", "digits") if isinstance(before, dict) else None
    data = merged.get("data") if isinstance(merged, dict) else None
    if old is None or not isinstance(data, dict) or data.get("benchmark", "digits") == old:
        return merged
    new, options = data.get("benchmark"), data.get("options")
    if not isinstance(options, dict) or not isinstance(new, str) or new not in DATASETS:
        return merged  # validation names what is wrong with them
    given = set()
    for text in overrides:
        path, value = parse_override(text)
        if path[:2] == ["data", "options"]:
            given |= set(path[2:3]) or set(value if isinstance(value, dict) else ())
    accepts = DATASETS.get(new).Options.model_fields
    dropped = [k for k in options if k not in accepts and k not in given]
    if dropped:
        merged = copy.deepcopy(merged)
        merged["data"]["options"] = {k: v for k, v in options.items() if k not in dropped}
        print(
            f"notice: data.benchmark={new} has no option {', '.join(dropped)} "
            f"(set for {old}): dropped",
            file=sys.stderr,
        )
    return merged


PLACEHOLDER = re.compile(r"\{data\.(\w+)\}")
FILLED = ("benchmark", "source", "target")


def fill_placeholders(raw: dict[str, Any], origin: str = "<dict>") -> dict[str, Any]:
    """``{data.source}``, ``{data.target}`` and ``{data.benchmark}`` in any string of the spec
    become the spec's own values (after overrides): a SHOT job's ``source_checkpoint:
    runs/amazon-source-{data.source}`` follows a pair override instead of silently loading
    another pair's model."""
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    values = {k: str(data.get(k, "digits" if k == "benchmark" else "")) for k in FILLED}

    def fill(node: Any, where: str) -> Any:
        if isinstance(node, dict):
            return {k: fill(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v, where) for v in node]
        if not isinstance(node, str) or "{data." not in node:
            return node
        bad = [m for m in PLACEHOLDER.findall(node) if m not in FILLED]
        if bad:
            raise SpecError(
                f"invalid job spec {origin}:\n  {where}: unknown placeholder "
                f"{{data.{bad[0]}}}; allowed: " + ", ".join(f"{{data.{k}}}" for k in FILLED)
            )
        return PLACEHOLDER.sub(lambda m: values[m.group(1)], node)

    return fill(raw, "")


def spec_from_dict(raw: dict[str, Any], origin: str = "<dict>") -> JobSpec:
    if not isinstance(raw, dict):
        raise SpecError(f"invalid job spec {origin}: the top level must be a mapping")
    raw = fill_placeholders(raw, origin)
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(_format(e, origin)) from None


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, anything else is replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_file(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One spec file as a dict. A top-level ``base: OTHER.yaml`` (relative to the file) names a
    job spec this one extends: the file's own sections merge over the base's, so a search spec
    holds only what it adds (``search:``, held-out source rows) and follows the shipped job."""
    if not path.is_file():
        raise SpecError(f"job spec {path} does not exist" + (f" (the base of {seen[-1]})" if seen else ""))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SpecError(f"job spec {path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict) or "base" not in raw:
        return raw
    base = raw.pop("base")
    if not isinstance(base, str):
        raise SpecError(f"invalid job spec {path}:\n  base: a path to a job spec file (got {base!r})")
    target = (path.parent / base).resolve()
    if target in seen or target == path.resolve():
        raise SpecError(f"invalid job spec {path}:\n  base: {base} extends itself")
    return merge(read_file(target, (*seen, path.resolve())), raw)


# spec fields naming files or run directories: read on Ray Train workers or Tune trials too,
# whose working directory is not the one the command was started in
PATH_FIELDS = (("method", "params", "source_checkpoint"), ("method", "params", "teacher"),
               ("data", "options", "path"), ("data", "options", "root"))  # fmt: skip


def absolute_paths(raw: dict[str, Any], base: Path | None = None) -> dict[str, Any]:
    """The PATH_FIELDS that are relative paths, made absolute against ``base`` (default: this
    process's working directory, which ``shiftray -C DIR`` sets): a worker resolves them where
    the user meant."""
    for *parents, leaf in PATH_FIELDS:
        node: Any = raw
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        value = node.get(leaf) if isinstance(node, dict) else None
        if isinstance(value, str) and value.startswith("zeroshot:"):  # a folder or a hub name
            name = value.removeprefix("zeroshot:")
            if name and not name.startswith(("/", "~")) and ((base or Path.cwd()) / name).is_dir():
                node[leaf] = f"zeroshot:{(base or Path.cwd()) / name}"
        elif isinstance(value, str) and value and "://" not in value and not value.startswith(("/", "~")):
            node[leaf] = str((base or Path.cwd()) / value)
    return raw


def load_raw(path: str | Path, overrides: list[str] | None = None,
             paths_from: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """A job spec file (its ``base`` merged in) with its overrides applied and its relative
    file paths made absolute (`absolute_paths`, against ``paths_from`` or the working
    directory), before validation."""
    raw = read_file(Path(path))
    merged = drop_foreign_options(raw, apply_overrides(raw, overrides or []), overrides or [])
    return absolute_paths(merged, paths_from)


def load_spec(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    return spec_from_dict(load_raw(path, overrides), str(path))


def dump_spec(spec: JobSpec) -> str:
    """The resolved spec as YAML; without ``search`` when it has none (a trial's spec, and every
    spec written before searches existed, so their hashes stay)."""
    exclude = {"search"} if spec.search is None else None
    return yaml.safe_dump(spec.model_dump(mode="json", exclude=exclude), sort_keys=False)


# fields that do not change what a run computes: where it writes, how often it reports
_BOOKKEEPING = ("tracking.", "train.eval_every", "train.log_every", "train.checkpoint_every",
                "train.keep_checkpoints", "train.eval_batch_size", "resources.max_failures",
                "resources.cpus_per_worker", "data.stream.prefetch_batches",
                "data.stream.decode_threads", "data.stream.read_ahead")  # fmt: skip


def spec_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``field: old -> new`` for every field that differs between two specs (as dicts), except
    bookkeeping ones; a resumed run warns with these when its checkpoint was trained otherwise."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and v:
                out |= flat(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(old), flat(new)
    ignored = _BOOKKEEPING
    if any(k.startswith("finetune.early_stopping.") for k in a.keys() | b.keys()):
        ignored = tuple(f for f in ignored if f != "train.eval_every")  # patience counts evals
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k) and not k.startswith(ignored)
    ]
