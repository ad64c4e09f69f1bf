"""`run_search`: a validated `Search` -> a Ray Tune experiment -> the summary, the selected
trial exported as a run directory.

The search directory is ``<tracking.output_dir>/<name>``: Tune's experiment (its state, one
directory per trial with the reported checkpoints) plus ``trials/<name>-<trial_id>`` (each
trial's run directory, as ``shiftray run`` writes it), ``search.json`` (the summary) and
``best/`` (a copy of the selected trial's run directory: ``shiftray run --resume`` and
``shiftray serve`` take it). The data are read once, on the driver, and put in the object
store once for all trials (unless the space varies ``data.*``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftray.errors import UserInputError
from shiftray.search.space import (
    Search,
    decode,
    default_point,
    param_space,
    pbt_mutations,
    within_space,
)
from shiftray.search.summary import SearchSummary, TrialRow, print_summary, summarize


@dataclass
class SearchResult:
    search_dir: Path
    summary: SearchSummary
    seconds: float


def _resources(s: Search) -> dict[str, float]:
    """What one trial holds: its worker's CPUs (and GPU) when it trains in its own process; no
    CPU when it drives a Ray Train worker group, which holds its own (a CPU sliver would leave
    a cluster whose CPUs the workers fill exactly one short, and the trial waiting forever).
    Tune wants a non-empty request: one byte of memory."""
    res = s.spec.resources
    if res.num_workers == 1 and not s.spec.data.stream.enabled:
        return {"cpu": res.cpus_per_worker, "gpu": 1.0 if res.use_gpu else 0.0}
    return {"cpu": 0.0, "memory": 1.0}


def _max_concurrent(s: Search) -> int:
    import ray

    if s.search.max_concurrent_trials:
        return s.search.max_concurrent_trials
    res, have = s.spec.resources, ray.cluster_resources()
    fits = int(have.get("CPU", 1) // (res.num_workers * res.cpus_per_worker))
    if res.use_gpu:
        fits = min(fits, int(have.get("GPU", 0) // res.num_workers))
    return max(1, fits)


def _search_alg(s: Search, max_concurrent: int):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    point = default_point(s) if s.search.include_default else None
    points = [point] if point else None
    if s.search.algorithm == "optuna":  # installed: check_optuna ran first
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(points_to_evaluate=points, seed=s.search.seed)
    return BasicVariantGenerator(points_to_evaluate=points, random_state=s.search.seed,
                                 max_concurrent=max_concurrent)  # fmt: skip


def _keep(s: Search) -> int | None:
    """Tune's checkpoints kept per trial. PBT keeps all: a weak trial paused while others run is
    pointed at a donor's checkpoint at once but restored from it only when it runs again, by which
    time the donor has moved on and a bounded `num_to_keep` may have deleted it (the trial then
    fails to restore and ends short of the last step)."""
    return None if s.search.scheduler.name == "pbt" else 2


def _scheduler(s: Search):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    sch, train = s.search.scheduler, s.spec.train
    if sch.name == "fifo":
        return FIFOScheduler()
    if sch.name == "pbt":  # a trial restarted from another's checkpoint resumes the loop there
        return PopulationBasedTraining(
            time_attr="step", perturbation_interval=sch.perturbation_interval or 2 * train.eval_every,
            hyperparam_mutations=pbt_mutations(s.search), custom_explore_fn=within_space(s.search),
            quantile_fraction=sch.quantile_fraction, resample_probability=sch.resample_probability,
        )  # fmt: skip
    # max_t one past the last step: ASHA stops a trial that reaches max_t at once, which would
    # cut the loop's finish (final model, shift statistics, result.json) short
    return ASHAScheduler(time_attr="step", max_t=train.steps + 1,
                         grace_period=min(sch.grace_period or train.eval_every, train.steps),
                         reduction_factor=sch.reduction_factor)  # fmt: skip


def check_optuna(s: Search) -> None:
    if s.search.algorithm == "optuna":
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise UserInputError("search.algorithm optuna needs `pip install optuna`") from None


def _trainable(s: Search, search_dir: Path, hooks: tuple = ()):
    from ray import tune
    from shiftray.search.trial import run_trial
    from shiftray.train.launch import job_data

    varies_data = any(p.startswith("data.") for p in s.search.space)
    data = None if varies_data else job_data(s.spec)
    fn = tune.with_parameters(run_trial, base=s.raw, search_dir=str(search_dir),
                              validators=s.validators, indexed=s.indexed, data=data,
                              hooks=tuple(hooks))  # fmt: skip
    return tune.with_resources(fn, _resources(s))


def _tuner(s: Search, search_dir: Path, resume: bool, callbacks: list, hooks: tuple = ()):
    from ray import tune

    trainable = _trainable(s, search_dir, hooks)
    if resume:
        return tune.Tuner.restore(str(search_dir), trainable, resume_errored=True)
    n = _max_concurrent(s)
    return tune.Tuner(
        trainable,
        param_space=param_space(s.search),
        tune_config=tune.TuneConfig(
            metric=s.search.metric, mode="max", scheduler=_scheduler(s),
            search_alg=_search_alg(s, n), num_samples=s.search.num_samples,
            # the random generator limits itself (above); Tune wraps a Searcher in a limiter
            max_concurrent_trials=n if s.search.algorithm == "optuna" else None,
        ),  # fmt: skip
        run_config=tune.RunConfig(
            name=s.name, storage_path=str(search_dir.parent),
            failure_config=tune.FailureConfig(max_failures=s.search.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=_keep(s)),
            callbacks=callbacks or None, verbose=1,
        ),  # fmt: skip
    )


def run_search(s: Search, resume: bool = False, restart: bool = False,
               callbacks: list | None = None, hooks: tuple = ()) -> SearchResult:  # fmt: skip
    """Run (or resume) the search; print and write its summary; export the selected trial.
    ``hooks``: loop hooks every trial runs (tests: `shiftray.train.hooks.KillOnce`)."""
    from shiftray.train.launch import ensure_ray, run_dir_for

    check_optuna(s)
    t0 = time.perf_counter()
    provenance = _provenance(s)  # the code that runs: taken at the start
    search_dir = run_dir_for(s.spec)  # <output_dir>/<name>, as a run's
    ensure_ray()
    from ray import tune

    exists = search_dir.is_dir() and tune.Tuner.can_restore(str(search_dir))
    if resume and not exists:
        raise UserInputError(f"--resume: no search to resume in {search_dir}")
    if exists and not resume:
        if not restart:
            raise UserInputError(
                f"a search already ran in {search_dir}: continue it with --resume, or start over "
                "with --restart (deletes it)"
            )
        shutil.rmtree(search_dir)
    from shiftray.search.hparams import HParamsLogger

    callbacks = [*(callbacks or []), HParamsLogger(list(s.search.space))]
    grid = _tuner(s, search_dir, resume, callbacks, hooks).fit()
    summary = summarize(s.name, s.search.metric, s.spec.train.steps, _rows(s, grid))
    seconds = time.perf_counter() - t0
    _write(s, search_dir, summary, seconds, provenance)
    print_summary(summary)
    if summary.selected is not None:
        best = export_best(s, search_dir, summary.selected)
        print(f"selected trial's run directory: {best} (shiftray run --resume / shiftray serve)")
    return SearchResult(search_dir, summary, seconds)


def _rows(s: Search, grid) -> list[TrialRow]:
    point = default_point(s) if s.search.include_default else None
    point = decode(point, s.indexed) if point else None
    rows = []
    for r in grid:
        m = dict(r.metrics or {})
        if "step" not in m or "trial_id" not in m:  # failed before its first evaluation
            continue
        cfg = decode({k: v for k, v in (r.config or {}).items() if k in s.search.space}, s.indexed)
        numeric = {k: float(v) for k, v in m.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        rows.append(TrialRow(m["trial_id"], cfg, int(m["step"]), numeric, cfg == point))
    return sorted(rows, key=lambda t: t.trial_id)


def _provenance(s: Search) -> dict[str, Any]:
    import hashlib
    import platform

    import ray
    from shiftray import provenance
    from shiftray.config.load import dump_spec

    return {"commit": provenance.commit(), "dirty": provenance.dirty(),
            "spec_sha256": hashlib.sha256(dump_spec(s.spec).encode()).hexdigest(),
            "ray": ray.__version__, "date": time.strftime("%Y-%m-%d"),
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "command": " ".join(["shiftray", *sys.argv[1:]]) if sys.argv else ""}  # fmt: skip


def _write(s: Search, search_dir: Path, summary: SearchSummary, seconds: float,
           provenance: dict[str, Any]) -> None:  # fmt: skip
    out = summary.as_dict() | {"seconds": round(seconds, 1), "validators_scored": s.validators,
                               "provenance": provenance}  # fmt: skip
    tmp = search_dir / "search.json.tmp"
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, search_dir / "search.json")


def export_best(s: Search, search_dir: Path, trial_id: str) -> Path:
    """Copy the selected trial's run directory to ``best/`` (complete, or not replaced)."""
    src = search_dir / "trials" / f"{s.name}-{trial_id}"
    best, tmp = search_dir / "best", search_dir / ".best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    (tmp / "selected.json").write_text(json.dumps({"trial_id": trial_id, "search": str(search_dir)}))
    shutil.rmtree(best, ignore_errors=True)
    os.replace(tmp, best)
    return best
