"""Target accuracy of finished run directories, grouped: a table (mean ± std over the runs of each
group) and a JSON file with every run's figure and its spec hash.

    python bench/runs_table.py runs/text/drugreview-* --group method --commit a3e0a52 \
        --out bench/results/text-drugreview

``--group`` names spec fields (dotted) that define a row, e.g. ``method.name`` or
``data.target_labels_per_class``; ``--commit`` records the commit the runs ran at (the runs
themselves do not store it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
from shiftray.display import print_table  # noqa: E402


def field(spec: dict, dotted: str):
    node = spec
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def read_run(run_dir: Path, groups: list[str]) -> dict:
    spec_text = (run_dir / "spec.yaml").read_text()
    spec = yaml.safe_load(spec_text)
    result = json.loads((run_dir / "result.json").read_text())
    return {
        "run": run_dir.name,
        "task": f"{spec['data']['source']}->{spec['data']['target']}",
        **{g: field(spec, g) for g in groups},
        "seed": field(spec, "train.seed"),
        "steps": result["step"],
        "target_acc": round(result["target_acc"], 2),
        "spec_sha256": hashlib.sha256(spec_text.encode()).hexdigest()[:16],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--group", action="append", default=[], help="spec field defining a row")
    ap.add_argument("--commit", required=True, help="the commit the runs ran at")
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    groups = args.group or ["method.name"]
    runs = [read_run(r, groups) for r in sorted(args.runs) if (r / "result.json").is_file()]
    rows: dict[tuple, list[dict]] = {}
    for r in runs:
        rows.setdefault((r["task"], *(str(r[g]) for g in groups)), []).append(r)
    table = []
    for key, rs in rows.items():
        accs = [r["target_acc"] for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        table.append({"task": key[0], **dict(zip(groups, key[1:], strict=True)),
                      "target acc %": f"{statistics.mean(accs):.2f} ± {std:.2f}", "runs": len(rs),
                      "each": ", ".join(f"{a:.2f}" for a in accs)})  # fmt: skip
    cols = ["task", *groups, "target acc %", "runs", "each"]
    print_table(table, cols)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"commit": args.commit, "rows": table, "runs": runs}, indent=1))
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in table]
    args.out.with_suffix(".md").write_text("\n".join(md) + f"\n\nRuns at {args.commit}.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
