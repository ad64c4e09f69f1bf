"""The validators' table over searches: Spearman's rho with the oracle target accuracy per
validator and search, and what each search selected against its oracle-best and default trials.

    python bench/search_tables.py [bench/results/search-*.json ...]

Reads the search summaries copied from ``<search_dir>/search.json`` into bench/results/ (the
digits, Amazon and Office-Caltech10 searches) and prints the Markdown tables docs/search.md
shows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fmt(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def rule_tables(searches: list[dict]) -> None:
    """The leave-one-benchmark-out rule (shiftray.search.selection): each benchmark's validator,
    chosen on the others' searches, and what it picks per search against the oracle."""
    from shiftray.search.selection import benchmark_of, choose, picks

    print("| benchmark | validator (chosen on the other benchmarks) | its mean rho there | runner-up |")
    print("|---|---|---|---|")
    for b in sorted({benchmark_of(s) for s in searches}):
        c = choose(searches, b)
        second = c.ranking[1] if len(c.ranking) > 1 else ("-", None)
        print(f"| {b} | {c.validator.removeprefix('validator/')} | {fmt(c.mean_rho, 3)} | "
              f"{second[0].removeprefix('validator/')} ({fmt(second[1], 3)}) |")  # fmt: skip
    print()
    print("| search | validator | its pick | oracle-best | default | pick - oracle |")
    print("|---|---|---|---|---|---|")
    rows = picks(searches)
    for p in rows:
        print(f"| {p.search} | {p.validator.removeprefix('validator/')} | {fmt(p.target_acc)} | "
              f"{fmt(p.oracle_acc)} | {fmt(p.default_acc)} | {fmt(p.gap)} |")  # fmt: skip
    gaps = [p.gap for p in rows]
    print(f"| mean over {len(rows)} searches | | | | | {fmt(sum(gaps) / len(gaps))} |")
    print()


def main() -> None:
    order = ["mnist-usps", "usps-mnist", "amazon", "office"]  # digits first: IM was chosen there
    found = (ROOT / "bench/results").glob("search-*.json")
    paths = [Path(p) for p in sys.argv[1:]] or sorted(
        found, key=lambda p: [k in p.name for k in order].index(True) if any(k in p.name for k in order) else 9
    )
    searches = [json.loads(p.read_text()) for p in paths]
    rule_tables(searches)
    names = [s["name"] for s in searches]
    keys = sorted({k for s in searches for k in s["validators"]})
    print("| validator | " + " | ".join(names) + " | mean |")
    print("|---|" + "---|" * (len(names) + 1))
    for k in keys:
        rhos = [s["validators"].get(k, {}).get("spearman") for s in searches]
        known = [r for r in rhos if r is not None]
        mean = sum(known) / len(known) if known else None
        print(f"| {k.removeprefix('validator/')} | " + " | ".join(fmt(r) for r in rhos) + f" | {fmt(mean)} |")
    print()
    print("| search | trials | selected by | its target acc | IM's pick | oracle-best | default | commit | minutes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s in searches:
        im = s["validators"].get("validator/im", {}).get("picked_target_acc")
        prov = s["provenance"]
        commit = prov["commit"] + (" (uncommitted changes)" if prov.get("dirty") else "")
        print(f"| {s['name']} | {len(s['trials'])} | {s['metric'].removeprefix('validator/')} | "
              f"{fmt(s['selected_target_acc'])} | {fmt(im)} | {fmt(s['oracle_best_target_acc'])} | "
              f"{fmt(s['default_target_acc'])} | {commit} | {s['seconds'] / 60:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
