"""Accuracy benchmark: any method in jobs/, several seeds, on the real benchmark data.

Runs the job specs in jobs/ in-process (the same training loop as Ray Train workers run), a
few at a time on separate cores, and writes:

- bench/results/accuracy.json: a list of {"benchmark", "task", "method", "seed", "target_acc",
  "steps", "seconds"} (target_acc in percent, the final model: no target-label selection);
- bench/results/accuracy.md: mean ± std per task and method beside the published figures.

    python bench/accuracy.py                       # digits + amazon, erm + dann, seeds 0 1 2
    python bench/accuracy.py --suites digits --seeds 0
    python bench/accuracy.py --suites office,amazon --methods shot,distill --seeds 0

SHOT and distillation runs train their first phase too (the source model SHOT adapts; the DANN
teacher of the same pair and seed), and their "seconds" include it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

AMAZON = {"b": "books", "d": "dvd", "e": "electronics", "k": "kitchen"}
OFFICE = {"A": "amazon", "C": "caltech", "D": "dslr", "W": "webcam"}

# Published figures (../shared/ANCHORS.md): TLlib digits (LeNet, full MNIST), DANN paper Table 1.
PUBLISHED = {
    ("digits", "mnist->usps"): {"erm": 82.1, "dann": 91.7, "cdan": 96.0},
    ("digits", "usps->mnist"): {"erm": 74.6, "dann": 95.2, "cdan": 97.7},
    **{
        ("amazon", f"{s}->{t}"): {"dann": v}
        for (s, t), v in zip(
            [(a, b) for a in "bdek" for b in "bdek" if a != b],
            [78.4, 73.3, 77.9, 72.3, 75.4, 78.3, 71.3, 73.8, 85.4, 70.9, 74.0, 84.3],
            strict=True,
        )
    },
}


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

    spec = load_spec(ROOT / job, [*overrides, "tracking.wandb=disabled"])
    data = load_job_data(spec)
    result = train_loop_per_worker(
        {"spec": spec.model_dump(mode="json"), "run_dir": run_dir, "data": data}
    )
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
    return {
        "benchmark": task.benchmark,
        "task": task.task,
        "method": task.method,
        "seed": task.seed,
        "target_acc": round(result["target_acc"], 3),
        "steps": steps,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def key(row: dict) -> tuple:
    return (row["benchmark"], row["task"], row["method"], row["seed"])


def summarize(rows: list[dict]) -> str:
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in rows:
        groups.setdefault((r["benchmark"], r["task"]), {}).setdefault(r["method"], []).append(
            r["target_acc"]
        )
    methods = sorted({r["method"] for r in rows}, key=lambda m: (m != "erm", m))
    published = [m for m in methods if any(m in v for v in PUBLISHED.values())]
    head = "| benchmark | task | " + " | ".join(f"{m} (shiftray)" for m in methods)
    head += " | " + " | ".join(f"{m} (published)" for m in published) + " |"
    lines = [head, "|" + "---|" * (2 + len(methods) + len(published))]

    def fmt(v: list[float]) -> str:
        if not v:
            return ""
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        return f"{statistics.mean(v):.1f} ± {sd:.1f} (n={len(v)})"

    means: dict[tuple[str, str], list[float]] = {}
    for (bench, task), by_m in sorted(groups.items()):
        pub = PUBLISHED.get((bench, task), {})
        cells = [fmt(by_m.get(m, [])) for m in methods] + [str(pub.get(m, "")) for m in published]
        lines.append(f"| {bench} | {task} | " + " | ".join(cells) + " |")
        for m in methods:
            if by_m.get(m):
                means.setdefault((bench, m), []).append(statistics.mean(by_m[m]))
    for bench in sorted({b for b, _ in means}):
        cells = []
        for m in methods:
            v = means.get((bench, m), [])
            cells.append(f"**{statistics.mean(v):.1f}** ({len(v)} tasks)" if v else "")
        pubm = {
            m: [PUBLISHED[k][m] for k in PUBLISHED if k[0] == bench and m in PUBLISHED[k]]
            for m in published
        }
        cells += [f"{statistics.mean(v):.1f}" if v else "" for v in pubm.values()]
        lines.append(f"| {bench} | mean | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summarize_means(rows: list[dict]) -> str:
    """One line per benchmark: each method's mean over tasks (of per-task seed means), with the
    number of tasks and the seeds per task, so partial runs show as partial."""
    by: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in rows:
        by.setdefault((r["benchmark"], r["method"]), {}).setdefault(r["task"], []).append(
            r["target_acc"]
        )
    methods = sorted({m for _, m in by}, key=lambda m: (m != "erm", m))
    lines = ["| benchmark | " + " | ".join(methods) + " |", "|" + "---|" * (1 + len(methods))]
    for bench in sorted({b for b, _ in by}):
        cells = []
        for m in methods:
            tasks = by.get((bench, m), {})
            if not tasks:
                cells.append("")
                continue
            mean = statistics.mean(statistics.mean(v) for v in tasks.values())
            seeds = sorted({len(v) for v in tasks.values()})
            n = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
            cells.append(f"{mean:.1f} ({len(tasks)} tasks, {n} seeds)")
        lines.append(f"| {bench} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path, rows: list[dict]) -> str:
    rows = sorted(rows, key=key)
    text = "## Mean over tasks\n\n" + summarize_means(rows) + "\n## Per task\n\n" + summarize(rows)
    out.with_suffix(".md").write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--suites", default="digits,amazon")
    p.add_argument("--methods", default="erm,dann")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tasks", help="only these tasks, e.g. mnist->usps,b->d (default: all)")
    p.add_argument("--procs", type=int, default=max(1, os.cpu_count() or 1))
    p.add_argument("--out", default=str(RESULTS / "accuracy.json"))
    p.add_argument("--summary-only", action="store_true", help="rewrite the .md from the .json")
    p.add_argument("--skip-done", action="store_true", help="skip runs already in --out")
    args = p.parse_args()
    if args.summary_only:
        print(write_summary(Path(args.out), json.loads(Path(args.out).read_text())))
        return
    todo = tasks(
        args.suites.split(","), args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = {key(r): r for r in (json.loads(out.read_text()) if out.exists() else [])}
    if args.tasks:
        todo = [t for t in todo if t.task in args.tasks.split(",")]
    if args.skip_done:
        todo = [t for t in todo if key(asdict(t)) not in rows]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.procs) as pool:
        futures = {pool.submit(run_task, t): t for t in todo}
        for i, fut in enumerate(as_completed(futures), 1):
            row = fut.result()
            rows[key(row)] = row
            print(
                f"[{i}/{len(todo)}] {row['benchmark']} {row['task']} {row['method']} seed {row['seed']}: "
                f"{row['target_acc']:.2f}% ({row['seconds']:.0f} s)",
                flush=True,
            )
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(sorted(rows.values(), key=key), indent=1))
            tmp.replace(out)
    print(write_summary(out, list(rows.values())))
    print(f"{len(todo)} runs in {time.perf_counter() - t0:.0f} s -> {out}")


if __name__ == "__main__":
    main()
