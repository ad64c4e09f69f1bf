"""The "selected without target labels" table: each re-selected method's accuracy with the values
a label-free search picked, beside the same method with its earlier job values and the
published figures.

    python bench/label_free_table.py

Reads bench/results/accuracy-label-free.json (written by ``python bench/accuracy.py --out
bench/results/accuracy-label-free.json ...`` after the picks were shipped in jobs/) and the
committed bench/results/accuracy.json (the earlier values). Each cell is the mean over tasks of
the per-task mean over seeds, with the number of tasks and seeds; published means are over the
tasks that have a published figure.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from accuracy_results import PUBLISHED, read_rows

RESULTS = Path(__file__).resolve().parent / "results"


def task_means(rows: list[dict], bench: str, method: str) -> tuple[dict[str, float], set[int]]:
    """task -> mean over seeds, and the seed counts seen."""
    by: dict[str, list[float]] = {}
    for r in rows:
        if r["benchmark"] == bench and r["method"] == method:
            by.setdefault(r["task"], []).append(r["target_acc"])
    return {t: statistics.mean(v) for t, v in by.items()}, {len(v) for v in by.values()}


def cell(means: dict[str, float], seeds: set[int]) -> str:
    if not means:
        return "not run"
    n = "-".join(str(s) for s in sorted(seeds))
    return f"{statistics.mean(means.values()):.1f} ({len(means)} tasks, {n} seeds)"


def table(free: list[dict], earlier: list[dict]) -> str:
    lines = ["| benchmark | method | selected without target labels | earlier job values | "
             "difference (same tasks) | published |", "|---|---|---|---|---|---|"]  # fmt: skip
    for bench, method in sorted({(r["benchmark"], r["method"]) for r in free}):
        new, new_seeds = task_means(free, bench, method)
        old, old_seeds = task_means(earlier, bench, method)
        both = sorted(set(new) & set(old))
        diff = statistics.mean(new[t] - old[t] for t in both) if both else None
        pub = [v[method] for (b, t), v in PUBLISHED.items() if b == bench and method in v and t in new]
        lines.append(f"| {bench} | {method} | {cell(new, new_seeds)} | {cell(old, old_seeds)} | "
                     + (f"{diff:+.1f}" if diff is not None else "") + " | "
                     + (f"{statistics.mean(pub):.1f} ({len(pub)} tasks)" if pub else "") + " |")  # fmt: skip
    commits = sorted({f"{r['commit'][:7]}{' (dirty)' if r.get('dirty') else ''}" for r in free})
    return "\n".join(lines) + f"\n\nrows: {len(free)}, commits: {', '.join(commits)}\n"


def main(argv: list[str]) -> None:
    free = list(read_rows(RESULTS / "accuracy-label-free.json").values())
    earlier = list(read_rows(RESULTS / "accuracy.json").values())
    print(table(free, earlier))


if __name__ == "__main__":
    main(sys.argv[1:])
