"""The validator rule (leave one benchmark out) never reads the chosen benchmark's own searches,
and the shipped job files carry what it picks on the committed searches."""

import json
import math
import re
from pathlib import Path

import pytest
from shiftray.search.selection import benchmark_of, choose, picked_config, picks

ROOT = Path(__file__).resolve().parents[2]
SEARCHES = sorted((ROOT / "bench/results").glob("search-*.json"))


def summary(name: str, benchmark: str, rhos: dict[str, float]) -> dict:
    return {"name": name, "benchmark": benchmark, "oracle_best_target_acc": 90.0,
            "validators": {v: {"spearman": r, "picked": f"{name}-{v}", "picked_target_acc": 80.0}
                           for v, r in rhos.items()}}  # fmt: skip


def test_a_benchmarks_validator_is_chosen_on_the_other_benchmarks_only():
    runs = [summary("a1", "a", {"x": 1.0, "y": 0.1}), summary("a2", "a", {"x": 1.0, "y": 0.2}),
            summary("b1", "b", {"x": 0.3, "y": 0.9}), summary("c1", "c", {"x": 0.5, "y": 0.7})]  # fmt: skip
    choice = choose(runs, "a")
    assert choice.validator == "y" and set(choice.chosen_on) == {"b1", "c1"}
    assert choice.mean_rho == pytest.approx(0.8)
    for r in runs[:2]:  # a's own rhos, however extreme, change nothing for a
        r["validators"]["y"]["spearman"] = -1.0
    assert choose(runs, "a").validator == "y"
    assert choose(runs, "b").validator == "x"  # a's searches now count for b
    with pytest.raises(ValueError, match="no search outside"):
        choose(runs[:2], "a")


def test_a_validator_some_search_did_not_score_is_not_eligible():
    runs = [summary("a1", "a", {"x": 0.1, "y": 0.2}), summary("b1", "b", {"x": 0.5}),
            summary("c1", "c", {"x": 0.4, "y": 0.9})]  # fmt: skip
    assert choose(runs, "a").validator == "x"


def _loaded() -> list[dict]:
    return [json.loads(p.read_text()) for p in SEARCHES]


def _value(spec: dict, dotted: str):
    node = spec
    for part in dotted.split("."):
        node = node[part]
    return node


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):  # job files keep 3 significant digits
        return math.isclose(float(a), float(b), rel_tol=5e-3)
    return a == b


@pytest.mark.skipif(not SEARCHES, reason="no committed search results")
def test_the_shipped_jobs_carry_the_rules_picks():
    """Each committed search's job file holds the values its benchmark's validator picked."""
    from shiftray.search.space import load_search

    found = _loaded()
    for p in picks(found):
        s = next(x for x in found if x["name"] == p.search)
        job = re.search(r"(jobs/\S+\.yaml)", s["provenance"]["command"]).group(1)
        overrides = [a for a in s["provenance"]["command"].split() if a.startswith("data.")]
        job_spec = load_search(ROOT / job, overrides).spec
        spec = job_spec.model_dump()
        spec["method"]["params"] = dict(job_spec.method.resolved_params())  # defaults included
        for key, value in picked_config(s, p.trial).items():
            assert _same(_value(spec, key), value), (p.search, key, _value(spec, key), value)


@pytest.mark.skipif(not SEARCHES, reason="no committed search results")
def test_every_search_names_its_benchmark():
    assert {benchmark_of(s) for s in _loaded()} == {"digits", "amazon", "office-caltech"}
