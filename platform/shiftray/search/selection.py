"""Which validator selects a benchmark's hyper-parameters, chosen without that benchmark's target
labels: leave one benchmark out.

A validator scores a trained model from unlabelled target data (IM, BNM, entropy, ...;
`shiftray.evaluate.validators`). How well it ranks models is measured, per search, by Spearman's
rho between its scores and the trials' target accuracy (`shiftray.search.summary`): that uses
target labels, so a validator chosen by rho on a benchmark's own searches has seen that
benchmark's labels. Here the validator of benchmark B is the one with the highest mean rho over
the searches of every *other* benchmark (Musgrave et al., "Benchmarking Validation Methods for
Unsupervised Domain Adaptation", 2022; SKADA-bench's realistic selection): B's own target
labels never enter B's choice. Then, per search of B, that validator's pick is what ships.

The inputs are search summaries (``search.json``, copied to ``bench/results/search-*.json``);
a summary's benchmark is its job's (``jobs/<benchmark>/...``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

Summary = dict[str, Any]


@dataclass(frozen=True)
class Choice:
    """The validator for ``benchmark``, and its mean rho over the searches it was chosen on."""

    benchmark: str
    validator: str
    mean_rho: float
    chosen_on: tuple[str, ...]  # the other benchmarks' searches
    ranking: tuple[tuple[str, float], ...]  # every eligible validator, best first


def benchmark_of(summary: Summary) -> str:
    """The benchmark a search ran on: ``benchmark`` when recorded, else its job's folder."""
    if summary.get("benchmark"):
        return summary["benchmark"]
    match = re.search(r"jobs/([^/\s]+)/", summary["provenance"]["command"])
    if match is None:
        raise ValueError(f"search {summary['name']!r}: no jobs/<benchmark>/ in its command")
    return match.group(1)


def _rhos(summary: Summary) -> dict[str, float]:
    return {k: v["spearman"] for k, v in summary["validators"].items()
            if v.get("spearman") is not None}  # fmt: skip


def choose(summaries: list[Summary], benchmark: str) -> Choice:
    """The validator for ``benchmark``: the best mean rho over the other benchmarks' searches,
    among the validators every one of them scored (ties: the first by name)."""
    others = [s for s in summaries if benchmark_of(s) != benchmark]
    if not others:
        raise ValueError(f"no search outside {benchmark!r} to choose its validator on")
    rhos = [_rhos(s) for s in others]
    eligible = sorted(set.intersection(*(set(r) for r in rhos)))
    means = {v: sum(r[v] for r in rhos) / len(rhos) for v in eligible}
    ranking = tuple(sorted(means.items(), key=lambda kv: (-kv[1], kv[0])))
    best, mean = ranking[0]
    return Choice(benchmark, best, mean, tuple(s["name"] for s in others), ranking)


@dataclass(frozen=True)
class Pick:
    """What one search ships under the rule, beside its oracle-best and default trials."""

    search: str
    benchmark: str
    validator: str
    trial: str
    target_acc: float
    oracle_acc: float
    default_acc: float | None

    @property
    def gap(self) -> float:
        """Target accuracy lost against the oracle-best trial (points; <= 0)."""
        return self.target_acc - self.oracle_acc


def picks(summaries: list[Summary]) -> list[Pick]:
    """Each search's pick by its benchmark's validator (`choose`)."""
    chosen = {b: choose(summaries, b) for b in {benchmark_of(s) for s in summaries}}
    out = []
    for s in summaries:
        b = benchmark_of(s)
        v = chosen[b].validator
        p = s["validators"][v]
        out.append(Pick(s["name"], b, v, p["picked"], p["picked_target_acc"],
                        s["oracle_best_target_acc"], s.get("default_target_acc")))  # fmt: skip
    return out


def picked_config(summary: Summary, trial: str) -> dict[str, Any]:
    """The values (dotted keys) of a search's trial."""
    (row,) = [t for t in summary["trials"] if t["trial_id"] == trial]
    return row["config"]
