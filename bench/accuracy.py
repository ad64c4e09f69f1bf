"""Accuracy benchmark: any method in jobs/, several seeds, on the real benchmark data.

Runs the job specs in jobs/ in-process (the same training loop as Ray Train workers run), a
few at a time on separate cores, and writes:

- a JSON list of {"benchmark", "task", "method", "seed", "target_acc", "steps", "seconds",
  and the provenance: "commit", "dirty", "spec_sha256" (of the resolved spec), "torch", "ray",
  "date", "machine", "cpus", "command"} (target_acc in percent, the final model: no checkpoint
  selection on target labels), by default a new file runs/bench/accuracy-<date>-<time>.json (or --out);
- beside it, the .md: mean ± std per task and method beside the published figures.

The committed bench/results/accuracy.json (and .md) change only with --update, which merges
the new rows into it by (benchmark, task, method, seed).

    python bench/accuracy.py                       # digits + amazon, erm + dann, seeds 0 1 2
    python bench/accuracy.py --suites digits --seeds 0 --tasks mnist:usps
    python bench/accuracy.py --suites office,amazon --methods shot,distill --seeds 0 --update
    python bench/accuracy.py --summary-only        # the committed table, and its commits
    python bench/accuracy.py --missing-provenance  # rows without provenance, how to redo them

SHOT and distillation runs train their first phase too (the source model SHOT adapts; the DANN
teacher of the same pair and seed), and their "seconds" include it.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata as md
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from accuracy_results import (
    has_provenance,
    key,
    provenance_summary,
    read_rows,
    redo_commands,
    summary_text,
    write_rows,
    write_summary,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
COMMITTED = RESULTS / "accuracy.json"
RUNS = ROOT / "runs" / "bench"  # a run's own rows by default (runs/ is not committed)

AMAZON = {"b": "books", "d": "dvd", "e": "electronics", "k": "kitchen"}
OFFICE = {"A": "amazon", "C": "caltech", "D": "dslr", "W": "webcam"}


@dataclass(frozen=True)
class Task:
    benchmark: str
    task: str
    method: str
    seed: int
    job: str
    overrides: tuple[str, ...]


def job_file(benchmark: str, task: str, method: str) -> str:
    if benchmark == "digits":
        s, t = task.split("->")
        return f"jobs/digits/{s}-{t}-{method}.yaml"
    return f"jobs/{'amazon' if benchmark == 'amazon' else 'office-caltech'}/{method}.yaml"


def tasks(suites: list[str], methods: list[str], seeds: list[int]) -> list[Task]:
    pairs: list[tuple[str, str, tuple[str, ...]]] = []
    if "digits" in suites:
        pairs += [("digits", "mnist->usps", ()), ("digits", "usps->mnist", ())]
    for suite, names in (("amazon", AMAZON), ("office", OFFICE)):
        if suite in suites:
            bench = "amazon" if suite == "amazon" else "office_caltech"
            for s in names:
                for t in names:
                    if s != t:
                        ov = (f"data.source={names[s]}", f"data.target={names[t]}")
                        pairs.append((bench, f"{s}->{t}", ov))
    out = [
        Task(bench, task, m, seed, job_file(bench, task, m), ov)
        for seed in seeds
        for m in methods
        for bench, task, ov in pairs
    ]
    return sorted(out, key=lambda t: t.benchmark != "digits")  # long runs first


def _train(job: str, overrides: list[str], run_dir: str) -> tuple[dict, int]:
    from shiftray.config.load import load_spec
    from shiftray.data.loading import load_job_data
    from shiftray.train.loop import train_loop_per_worker
    from shiftray.train.run import LoopConfig

    spec = load_spec(ROOT / job, [*overrides, "tracking.wandb=disabled"])
    data = load_job_data(spec)
    result = train_loop_per_worker(LoopConfig(spec, Path(run_dir), data))
    return result, spec.train.steps


def run_task(task: Task) -> dict:
    import torch

    torch.set_num_threads(1)
    overrides = [*task.overrides, f"train.seed={task.seed}"]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if task.method == "shot":  # phase 1: the source model SHOT adapts (time included)
            src = job_file(task.benchmark, task.task, "source")
            _train(src, overrides, f"{tmp}/source")
            overrides.append(f"method.params.source_checkpoint={tmp}/source")
        if task.method == "distill":  # phase 1: the DANN teacher, same pair and seed
            _train(job_file(task.benchmark, task.task, "dann"), overrides, f"{tmp}/teacher")
            overrides.append(f"method.params.teacher={tmp}/teacher")
        result, steps = _train(task.job, overrides, f"{tmp}/run")
        sha = spec_sha256(task.job, overrides, tmp)
    return {
        "benchmark": task.benchmark,
        "task": task.task,
        "method": task.method,
        "seed": task.seed,
        "target_acc": round(result["target_acc"], 3),
        "steps": steps,
        "seconds": round(time.perf_counter() - t0, 1),
        "spec_sha256": sha,
    }


def spec_sha256(job: str, overrides: list[str], tmp: str) -> str:
    """sha256 of the resolved spec as shiftray writes it (`dump_spec`), the run's temporary
    folder (where a first phase's model lies) written as ``$TMP`` so that reruns compare."""
    from shiftray.config.load import dump_spec, load_spec

    spec = load_spec(ROOT / job, [*overrides, "tracking.wandb=disabled"])
    return hashlib.sha256(dump_spec(spec).replace(tmp, "$TMP").encode()).hexdigest()


def run_provenance() -> dict:
    """What every row of this run shares: the commit (and whether the tree had uncommitted
    changes), torch and ray versions, the machine; `stamp` adds the date and the spec's sha."""
    from common import provenance  # bench/ is on sys.path, as for accuracy_results
    from shiftray import provenance as source

    common = provenance()
    versions = {}
    for pkg in ("torch", "ray"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {
        "commit": source.commit(short=False),
        "dirty": bool(source.dirty()),
        **versions,
        "machine": common["machine"],
        "cpus": common["cpus"],
        "command": common["command"],
    }


def stamp(row: dict, shared: dict) -> dict:
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {**row, **shared, "date": date}  # provenance fields beside the result


def task_names(arg: str) -> list[str]:
    """``--tasks`` names: ``mnist->usps`` (quoted in a shell, where ``>`` redirects) or the
    shell-safe ``mnist:usps``."""
    return [t.strip().replace(":", "->") for t in arg.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--suites", default="digits,amazon")
    p.add_argument("--methods", default="erm,dann")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument(
        "--tasks",
        help="only these tasks, e.g. mnist:usps,b:d (or, quoted, 'mnist->usps,b->d'; default: all)",
    )
    p.add_argument("--procs", type=int, default=max(1, os.cpu_count() or 1))
    p.add_argument(
        "--out",
        help="this run's rows, merged into the file if it exists (default: a new "
        "runs/bench/accuracy-<date>-<time>.json)",
    )
    p.add_argument(
        "--update",
        action="store_true",
        help="merge the new rows into the committed bench/results/accuracy.json (and .md), "
        "by (benchmark, task, method, seed)",
    )
    p.add_argument(
        "--summary-only",
        action="store_true",
        help="print the tables and the commits the rows come from (--out, else the committed "
        "results); rewrites the .md with --out or --update",
    )
    p.add_argument(
        "--missing-provenance",
        action="store_true",
        help="list the rows without provenance and the commands that re-run them",
    )
    p.add_argument(
        "--skip-done",
        action="store_true",
        help="skip runs already in the results (the committed ones with --update, else --out)",
    )
    p.add_argument(
        "--redo-unprovenanced",
        action="store_true",
        help="with --skip-done: a row without provenance counts as not done",
    )
    args = p.parse_args(argv)
    out = Path(args.out).resolve() if args.out else None
    if out == COMMITTED and not args.update:
        p.error(f"--out {args.out} is the committed results: add --update to merge into it")
    if args.summary_only or args.missing_provenance:
        src = out or COMMITTED
        rows = list(read_rows(src).values())
        if args.summary_only:
            text = write_summary(src, rows) if (out or args.update) else summary_text(rows)
            print(text + "\n" + provenance_summary(rows))
        if args.missing_provenance:
            missing = [r for r in rows if not has_provenance(r)]
            print(f"{len(missing)} of {len(rows)} rows in {src} lack provenance")
            for r in sorted(missing, key=key):
                print(f"  {r['benchmark']} {r['task']} {r['method']} seed {r['seed']}")
            print("\n".join(redo_commands(rows)))
        return
    todo = tasks(
        args.suites.split(","), args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    )
    if args.tasks:
        wanted = task_names(args.tasks)
        if unknown := sorted(set(wanted) - {t.task for t in todo}):
            known = ", ".join(sorted({t.task.replace("->", ":") for t in todo}))
            p.error(f"--tasks {unknown} are not tasks of --suites {args.suites} ({known})")
        todo = [t for t in todo if t.task in wanted]
    if out is None:
        now = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = RUNS / f"accuracy-{now}.json"
    rows = read_rows(out)
    committed = read_rows(COMMITTED) if args.update else {}
    if args.skip_done:
        done = committed if args.update else rows
        if args.redo_unprovenanced:
            done = {k: r for k, r in done.items() if has_provenance(r)}
        todo = [t for t in todo if key(asdict(t)) not in done]
    shared = run_provenance()
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.procs) as pool:
        futures = {pool.submit(run_task, t): t for t in todo}
        for i, fut in enumerate(as_completed(futures), 1):
            row = stamp(fut.result(), shared)
            rows[key(row)] = row
            print(
                f"[{i}/{len(todo)}] {row['benchmark']} {row['task']} {row['method']} seed "
                f"{row['seed']}: {row['target_acc']:.2f}% ({row['seconds']:.0f} s)",
                flush=True,
            )
            write_rows(out, rows)
            if args.update:  # merged as each run ends: a long run cut short keeps its rows
                committed[key(row)] = row
                write_rows(COMMITTED, committed)
    print(write_summary(out, list(rows.values())))
    if args.update and out != COMMITTED:
        write_summary(COMMITTED, list(committed.values()))
    print(f"{len(todo)} runs in {time.perf_counter() - t0:.0f} s -> {out}")
    if args.update:
        print(f"merged into {COMMITTED}")


if __name__ == "__main__":
    main()
