"""The rounds' points -> one row per (model, server, concurrency): the median and range over
rounds of each figure, and the median over rounds of its ratio to the bare server's figure in
the same round; then the acceptance goals."""

from __future__ import annotations

import statistics


def _span(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def summarise(raw: list[dict]) -> list[dict]:
    """Per (model, server, concurrency): medians over rounds, ratios to bare in each round."""
    bare = {(x["model"], x["round"], x["concurrency"]): x for x in raw if x["server"] == "bare"}
    keys = sorted({(x["model"], x["server"], x["concurrency"]) for x in raw},
                  key=lambda k: (k[0], k[2], k[1] != "bare", k[1]))  # fmt: skip
    out = []
    for m, name, c in keys:
        pts = [x for x in raw if (x["model"], x["server"], x["concurrency"]) == (m, name, c)
               and "error" not in x]  # fmt: skip
        row = {"model": m, "server": name, "concurrency": c, "rounds": len(pts)}
        for f in ("req_per_s", "p50_ms", "p99_ms", "cpu_ms_per_req"):
            vals = [x[f] for x in pts if x.get(f) is not None]
            row[f] = round(statistics.median(vals), 2) if vals else None
            row[f"{f}_range"] = [round(min(vals), 2), round(max(vals), 2)] if vals else None
            row[f"{f}_span"] = _span(vals, 2 if f == "cpu_ms_per_req" else 1)
        row["non_2xx"] = sum(x["non_2xx"] for x in pts)
        failed = [x for x in raw if "error" in x and (x["model"], x["server"], x["concurrency"])
                  == (m, name, c)]  # fmt: skip
        row["errors"] = sum(x["errors"] for x in pts) + len(failed)
        pairs = [(x, bare[(m, x["round"], c)]) for x in pts if (m, x["round"], c) in bare]
        pairs = [(x, b) for x, b in pairs if x["ok"] and b["ok"]]
        for f in ("req_per_s", "p50_ms", "p99_ms"):
            ratios = [x[f] / b[f] for x, b in pairs if b[f]]
            row[f"x_bare_{f}"] = round(statistics.median(ratios), 2) if ratios else None
        diffs = [x["p50_ms"] - b["p50_ms"] for x, b in pairs]
        row["p50_minus_bare_ms"] = round(statistics.median(diffs), 2) if diffs else None
        out.append(row)
    return out


def acceptance(rows: list[dict], goals: dict[str, float], p50_slack_ms: float) -> dict:
    """shiftray's rows against the goals: c=32 req/s x bare >= goals[model], c=1 p50 <= bare's
    + p50_slack_ms (medians over rounds of the per-round figures)."""
    pick = {(r["model"], r["server"], r["concurrency"]): r for r in rows}
    out = {}
    for m, goal in goals.items():
        for name in ("shiftray", "shiftray-binary"):
            top, one = pick.get((m, name, 32)), pick.get((m, name, 1))
            if top and top["x_bare_req_per_s"] is not None:
                v = top["x_bare_req_per_s"]
                out[f"{m} {name} c=32 req/s x bare >= {goal}"] = {"value": v, "pass": v >= goal}
            if one and one["p50_minus_bare_ms"] is not None:
                v = one["p50_minus_bare_ms"]
                out[f"{m} {name} c=1 p50 - bare p50 <= {p50_slack_ms} ms"] = {
                    "value": v,
                    "pass": v <= p50_slack_ms,
                }
    return out
