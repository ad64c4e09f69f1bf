"""The serving tables of docs/serving.md, from bench/serve_load.py's result file.

    python bench/serve_table.py [bench/results/cpu-serve-load.json]

Per model, server and concurrency: median [min-max] over rounds of 2xx req/s, its ratio to the
bare server's in the same round (median over rounds), p50 and p99 (ms), p50 minus bare's, the
server tree's CPU ms per answered request; then the overload rows and the acceptance lines.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = {"lenet": "LeNet", "effnet": "EfficientNet-Lite0"}


def load_table(d: dict) -> list[str]:
    out = ["| model | server | concurrency | req/s (min-max) | x bare | p50 ms | p50 - bare | p99 ms "
           "| CPU ms/req |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in d["rows"]:
        lo, hi = r["req_per_s_range"]
        out.append(
            f"| {NAMES.get(r['model'], r['model'])} | {r['server']} | {r['concurrency']} | "
            f"{r['req_per_s']:.1f} ({lo:.1f}-{hi:.1f}) | {r['x_bare_req_per_s']:.2f} | "
            f"{r['p50_ms']:.1f} | {r['p50_minus_bare_ms']:+.1f} | {r['p99_ms']:.1f} | "
            f"{r['cpu_ms_per_req']:.2f} |"
        )
    return out


def overload_table(d: dict) -> list[str]:
    out = ["| model | offered req/s (x sustainable) | 2xx | 503 | other 5xx | p99 of 503s (client / "
           "server) ms | p99 of 2xx (client / server) ms | unloaded c=1 p99 ms | recovery s |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for o in d["overload"]:
        c = o["counts"]
        out.append(
            f"| {NAMES.get(o['model'], o['model'])} | {o['sent_rate']:.0f} "
            f"(x{o['sent_rate'] / o['sustainable_req_per_s']:.1f}) | {c['2xx']} | {c['503']} | "
            f"{c['5xx'] + c['other'] + c['error']} | {o['p99_503_ms']:.0f} / "
            f"{o['server_p99_503_ms']:.0f} | {o['p99_2xx_ms']:.0f} / {o['server_p99_2xx_ms']:.0f} | "
            f"{o['unloaded_c1_p99_ms']:.1f} | {o['recovery_s']:.1f} |"
        )
    return out


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench/results/cpu-serve-load.json"
    d = json.loads(path.read_text())
    print("\n".join(load_table(d)))
    print()
    print("\n".join(overload_table(d)))
    print()
    for line, got in d["acceptance"].items():
        print(f"- {'PASS' if got['pass'] else 'SHORT'}: {line}: {got['value']}")
    print(f"\n{d['commit']}{' (dirty)' if d.get('dirty') else ''}, {d['date']}, {d['command']}")


if __name__ == "__main__":
    main()
