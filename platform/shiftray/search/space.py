"""A job spec with a ``search:`` section -> the base spec, the checked space, Tune's domains.

Everything here runs before Ray starts: `load_search` validates the job spec and then every
value each distribution can give (`Distribution.extremes`) in a trial spec, and reports all
bad ones together.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftray.config.load import SpecError, load_raw, spec_from_dict
from shiftray.config.schema import JobSpec, uses_source
from shiftray.config.search import Distribution, SearchSpec


@dataclass
class Search:
    """A validated search: the job spec (``raw``: as a dict, before defaults are filled, which
    each trial starts from), its search section, and the validators every trial scores."""

    raw: dict[str, Any]
    spec: JobSpec
    search: SearchSpec
    validators: list[str]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def indexed(self) -> dict[str, list[Any]]:
        """The choice/grid dimensions whose values are lists or mappings (stages, layer widths):
        Tune samples their index (it reads a list in a preset point as nested parameters)."""
        return {p: list(d.args) for p, d in self.search.space.items() if is_indexed(d)}


def set_path(raw: dict[str, Any], path: str, value: Any) -> None:
    node = raw
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError(f"search.space: {path!r}: {part!r} is not a section")
    node[last] = copy.deepcopy(value)


def get_path(spec: JobSpec, path: str) -> Any:
    """The spec's value at ``path`` (a method parameter's default when the spec leaves it)."""
    node: Any = spec.model_dump(mode="json")
    node["method"]["params"] = spec.method.resolved_params().model_dump(mode="json")
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def trial_raw(raw: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The job spec of one trial: the base without its search section, with ``config``'s
    values at their dotted paths."""
    out = {k: copy.deepcopy(v) for k, v in raw.items() if k != "search"}
    for path, value in config.items():
        set_path(out, path, value)
    return out


def default_validators(spec: JobSpec) -> list[str]:
    """Every registered validator this job can score (those reading held-out source rows only
    when it holds some out and its method reads the source; MixVal not on token ids)."""
    from shiftray.registry import VALIDATORS, reads_tokens

    can_source = spec.data.source_val_fraction > 0 and uses_source(spec.method.name)
    text = reads_tokens(spec.model.backbone)
    return [n for n in VALIDATORS.names()
            if (can_source or not getattr(VALIDATORS.get(n), "needs_source", False))
            and not (text and getattr(VALIDATORS.get(n), "mixes_inputs", False))]  # fmt: skip


def check_space(raw: dict[str, Any], search: SearchSpec, origin: str) -> None:
    """Each extreme value of each distribution, alone in an otherwise default trial spec, must
    make a valid job spec; all failures are reported together."""
    problems = []
    for path, dist in search.space.items():
        for value in dist.extremes():
            try:
                spec_from_dict(trial_raw(raw, {path: value}), origin)
            except SpecError as e:
                detail = str(e).split("\n", 1)[-1].strip()
                problems.append(f"  search.space.{path} = {value!r}:\n    {detail}")
    if problems:
        raise SpecError(f"invalid search space in {origin}:\n" + "\n".join(problems))


def load_search(path: str | Path, overrides: list[str] | None = None,
                paths_from: Path | None = None) -> Search:  # fmt: skip
    """The search spec, validated with every value of its space (``paths_from``: `load_raw`)."""
    raw = load_raw(path, overrides, paths_from)
    spec = spec_from_dict(raw, str(path))
    if spec.search is None:
        raise SpecError(f"{path} has no search: section; see `shiftray reference` (search)")
    check_space(raw, spec.search, str(path))
    validators = spec.search.validators or default_validators(spec)
    metric = spec.search.metric
    if metric.startswith("validator/") and metric.removeprefix("validator/") not in validators:
        validators = [*validators, metric.removeprefix("validator/")]
    if metric == "source_val_acc" and spec.data.source_val_fraction <= 0:
        raise SpecError(f"{path}: search.metric source_val_acc needs data.source_val_fraction > 0")
    if spec.search.scheduler.name == "pbt" and (spec.resources.num_workers > 1 or spec.data.stream.enabled):
        raise SpecError(f"{path}: search.scheduler pbt restarts a trial from another's checkpoint, "
                        "which one-worker trials do (resources.num_workers: 1, no streaming)")  # fmt: skip
    spec_from_dict(trial_raw(raw, {"train.validators": validators}), str(path))  # they can run
    return Search(raw, spec, spec.search, validators)


def is_indexed(dist: Distribution) -> bool:
    return dist.kind in ("choice", "grid") and any(isinstance(v, list | dict) for v in dist.args)


def decode(config: dict[str, Any], indexed: dict[str, list[Any]]) -> dict[str, Any]:
    """A Tune config -> the values it stands for (indexed dimensions: index -> value)."""
    return {k: indexed[k][v] if k in indexed else v for k, v in config.items()}


def tune_domain(dist: Distribution):
    """The Ray Tune sampling domain of a distribution (of the index, for `is_indexed` ones)."""
    from ray import tune

    a = list(range(len(dist.args))) if is_indexed(dist) else dist.args
    return {
        "uniform": lambda: tune.uniform(a[0], a[1]),
        "loguniform": lambda: tune.loguniform(a[0], a[1]),
        "quniform": lambda: tune.quniform(a[0], a[1], a[2]),
        "randint": lambda: tune.randint(a[0], a[1]),
        "lograndint": lambda: tune.lograndint(a[0], a[1]),
        "choice": lambda: tune.choice(list(a)),
        "grid": lambda: tune.grid_search(list(a)),
    }[dist.kind]()


def param_space(search: SearchSpec) -> dict[str, Any]:
    return {path: tune_domain(dist) for path, dist in search.space.items()}


def pbt_mutations(search: SearchSpec) -> dict[str, Any]:
    """PBT's mutations: a choice as its list (explore moves to a neighbouring value), a range as
    its Tune domain (explore multiplies by 0.8 or 1.2, or redraws)."""
    return {p: list(range(len(d.args))) if is_indexed(d) else list(d.args) if d.kind == "choice"
            else tune_domain(d) for p, d in search.space.items()}  # fmt: skip


def within_space(search: SearchSpec):
    """PBT's ``custom_explore_fn``: a perturbed value (x1.2) clipped back into its range, so
    every trial stays a point of the space that was checked before Ray started."""
    ranges = {p: (d.args[0], d.args[1] - (1 if d.kind in ("randint", "lograndint") else 0))
              for p, d in search.space.items() if d.kind not in ("choice", "grid")}  # fmt: skip

    def clip(config: dict[str, Any]) -> dict[str, Any]:
        for path, (low, high) in ranges.items():
            if path in config:
                config[path] = type(config[path])(min(max(config[path], low), high))
        return config

    return clip


def default_point(s: Search) -> dict[str, Any] | None:
    """The job spec's own values at the searched paths, as a first trial to evaluate; None
    when a grid dimension fixes values or a default lies outside its distribution."""
    point = {}
    for path, dist in s.search.space.items():
        value = get_path(s.spec, path)
        if dist.kind == "grid" or value is None or not dist.default_in_range(value):
            return None
        point[path] = dist.args.index(value) if is_indexed(dist) else value
    return point
