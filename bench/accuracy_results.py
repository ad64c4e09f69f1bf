"""The accuracy benchmark's results: rows keyed by (benchmark, task, method, seed), their
provenance, and the Markdown tables written beside them (see bench/accuracy.py)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

PROVENANCE = ("commit", "dirty", "spec_sha256", "torch", "ray", "date", "machine")
SUITE = {"digits": "digits", "amazon": "amazon", "office_caltech": "office"}

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


def has_provenance(row: dict) -> bool:
    return all(k in row for k in PROVENANCE)


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


def summary_text(rows: list[dict]) -> str:
    rows = sorted(rows, key=key)
    return "## Mean over tasks\n\n" + summarize_means(rows) + "\n## Per task\n\n" + summarize(rows)


def write_summary(out: Path, rows: list[dict]) -> str:
    text = summary_text(rows)
    out.with_suffix(".md").write_text(text)
    return text


def read_rows(path: Path) -> dict[tuple, dict]:
    return {key(r): r for r in (json.loads(path.read_text()) if path.exists() else [])}


def write_rows(path: Path, rows: dict[tuple, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(rows.values(), key=key), indent=1))
    tmp.replace(path)


def provenance_summary(rows: list[dict]) -> str:
    """Which commits the rows come from: one line per commit, then the rows with none."""
    by: dict[tuple, list[dict]] = {}
    for r in rows:
        pv = r if has_provenance(r) else {}
        by.setdefault((bool(pv), pv.get("commit"), pv.get("dirty")), []).append(pv)
    lines = []
    for (known, commit, dirty), pvs in sorted(by.items(), key=lambda kv: -len(kv[1])):
        if not known:
            lines.append(f"{len(pvs)} rows without provenance (--missing-provenance lists them)")
            continue
        dates = sorted(pv["date"][:10] for pv in pvs)
        tree = " (uncommitted changes)" if dirty else ""
        source = f"commit {commit[:12]}" if commit else "no commit (not run from a git checkout)"
        lines.append(f"{len(pvs)} rows from {source}{tree}, {dates[0]} to {dates[-1]}")
    return "\n".join(lines)


def redo_commands(rows: list[dict]) -> list[str]:
    """Commands that re-run exactly the rows lacking provenance (with --skip-done
    --redo-unprovenanced, the rows of each command's task x seed product that have
    provenance are skipped)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if not has_provenance(r):
            groups.setdefault((r["benchmark"], r["method"]), []).append(r)
    out = []
    for (bench, method), rs in sorted(groups.items()):
        names = ",".join(sorted({r["task"].replace("->", ":") for r in rs}))
        seeds = ",".join(str(s) for s in sorted({r["seed"] for r in rs}))
        out.append(
            f"python bench/accuracy.py --update --skip-done --redo-unprovenanced "
            f"--suites {SUITE[bench]} --methods {method} --seeds {seeds} --tasks {names}"
        )
    return out
