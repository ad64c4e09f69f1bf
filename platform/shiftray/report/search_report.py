"""`shiftray report SEARCH_DIR`: one self-contained HTML page about a search.

plotly's JavaScript is inlined once, so the file opens with no network (an air-gapped cluster,
an e-mail attachment). The page holds: what was selected against the oracle-best and default
trials; the trials table; a parallel-coordinates view of the hyper-parameters against the
selection metric and the target accuracy; each trial's learning curves (the selection metric
and the target accuracy over steps, from its metrics.jsonl); and one scatter per validator of
its value against the target accuracy, titled with Spearman's rho. Target accuracy is shown
for judging the validators: it is recorded in every trial and selects nothing.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from shiftray.search.summary import ORACLE


def _trial_dir(search_dir: Path, name: str, trial_id: str) -> Path:
    return search_dir / "trials" / f"{name}-{trial_id}"


def _curves(search_dir: Path, s: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    from shiftray.tracking import read_metrics

    out = {}
    for t in s["trials"]:
        records = read_metrics(_trial_dir(search_dir, s["name"], t["trial_id"]))
        out[t["trial_id"]] = [r for r in records if ORACLE in r or s["metric"] in r]
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(s: dict[str, Any]):
    import plotly.graph_objects as go

    paths = list(s["trials"][0]["config"]) if s["trials"] else []
    trials = sorted(s["trials"], key=lambda t: -(t["metrics"].get(s["metric"]) or -1e30))
    cols = ["trial", *paths, "step", s["metric"], "target_acc (report only)"]
    cells = [[t["trial_id"] + (" (selected)" if t["trial_id"] == s["selected"] else "")
              + (" (default)" if t["is_default"] else "") for t in trials]]  # fmt: skip
    cells += [[_fmt(t["config"].get(p)) for t in trials] for p in paths]
    cells += [[t["step"] for t in trials], [_fmt(t["metrics"].get(s["metric"])) for t in trials],
              [_fmt(t["metrics"].get(ORACLE)) for t in trials]]  # fmt: skip
    fig = go.Figure(go.Table(header={"values": cols}, cells={"values": cells}))
    fig.update_layout(title="Trials", height=120 + 28 * len(trials), margin={"t": 40, "b": 10})
    return fig


def _parallel(s: dict[str, Any]):
    import plotly.graph_objects as go

    trials = s["trials"]
    dims = []
    for p in trials[0]["config"]:
        values = [t["config"][p] for t in trials]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            dims.append({"label": p, "values": values})
        else:  # a choice: its values as categories
            names = sorted({json.dumps(v) for v in values})
            dims.append({"label": p, "values": [names.index(json.dumps(v)) for v in values],
                         "tickvals": list(range(len(names))), "ticktext": names})  # fmt: skip
    for key in (s["metric"], ORACLE):
        dims.append({"label": key, "values": [t["metrics"].get(key) for t in trials]})
    color = [t["metrics"].get(s["metric"]) for t in trials]
    fig = go.Figure(go.Parcoords(line={"color": color, "colorscale": "Viridis", "showscale": True},
                                 dimensions=dims))  # fmt: skip
    fig.update_layout(title=f"Hyper-parameters against {s['metric']} and target accuracy")
    return fig


def _learning_curves(s: dict[str, Any], curves: dict[str, list[dict[str, Any]]]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=(s["metric"], "target_acc (report only)"))
    for i, (tid, records) in enumerate(sorted(curves.items())):
        for col, key in ((1, s["metric"]), (2, ORACLE)):
            pts = [r for r in records if key in r]
            fig.add_trace(go.Scatter(x=[r["step"] for r in pts], y=[r[key] for r in pts],
                                     mode="lines+markers", name=tid, legendgroup=tid,
                                     showlegend=col == 1, line={"color": _color(i)}),
                          row=1, col=col)  # fmt: skip
    fig.update_xaxes(title_text="step")
    fig.update_layout(title="Learning curves", height=420)
    return fig


def _scatter(s: dict[str, Any]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    keys = list(s["validators"])
    cols = min(4, max(1, len(keys)))
    rows = (len(keys) + cols - 1) // cols
    titles = []
    for k in keys:
        rho = s["validators"][k]["spearman"]
        titles.append(f"{k.removeprefix('validator/')}: rho {rho:.2f}" if rho is not None else k)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles)
    for i, k in enumerate(keys):
        pts = [t for t in s["trials"] if t["metrics"].get(k) is not None]
        fig.add_trace(go.Scatter(x=[t["metrics"][k] for t in pts],
                                 y=[t["metrics"].get(ORACLE) for t in pts],
                                 text=[t["trial_id"] for t in pts], mode="markers",
                                 showlegend=False, marker={"color": _color(i)}),
                      row=i // cols + 1, col=i % cols + 1)  # fmt: skip
    fig.update_yaxes(title_text="target_acc", col=1)
    fig.update_layout(title="Each validator against the target accuracy (over trials)",
                      height=300 * rows)  # fmt: skip
    return fig


def _color(i: int) -> str:
    import plotly.colors

    palette = plotly.colors.qualitative.Plotly
    return palette[i % len(palette)]


def _headline(s: dict[str, Any]) -> str:
    def acc(key: str) -> str:
        v = s.get(f"{key}_target_acc")
        return "-" if v is None else f"{v:.2f}"

    prov = s.get("provenance", {})
    return (
        f"<p>Selected by <b>{html.escape(s['metric'])}</b>: trial {html.escape(str(s['selected']))}, "
        f"target accuracy {acc('selected')}. Oracle-best trial: {html.escape(str(s['oracle_best']))} "
        f"({acc('oracle_best')}). Default spec's trial: {html.escape(str(s['default']))} "
        f"({acc('default')}). Target accuracy is for judging; it selected nothing.</p>"
        f"<p class=prov>{len(s['trials'])} trials, {s.get('seconds', 0):.0f} s; commit "
        f"{html.escape(str(prov.get('commit')))}, spec sha256 {html.escape(str(prov.get('spec_sha256', ''))[:12])}, "
        f"{html.escape(str(prov.get('date')))}</p>"
    )  # fmt: skip


def search_report(search_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``<search_dir>/report.html`` (or ``out``); returns its path."""
    from shiftray.report.page import write_page

    search_dir = Path(search_dir)
    summary = search_dir / "search.json"
    if not summary.is_file():
        from shiftray.errors import UserInputError

        raise UserInputError(f"{summary} does not exist: is {search_dir} a finished search?")
    s = json.loads(summary.read_text())
    figs = [_table(s)]
    if s["trials"]:
        figs += [_parallel(s), _learning_curves(s, _curves(search_dir, s)), _scatter(s)]
    return write_page(Path(out) if out else search_dir / "report.html",
                      f"Search {s['name']}", _headline(s), figs)  # fmt: skip
