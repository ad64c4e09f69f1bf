"""`shiftray report RUN_DIR`: one self-contained HTML page about a training run.

What a user needs to see whether adaptation aligned the domains: the learning curves (loss, the
target accuracy and any validators over steps, from metrics.jsonl); per-class target accuracy
and the confusion matrix of the final model on the target test split; and, before and after
adaptation, a 2-D PCA view of source and target features and the proxy A-distance between
them. "Before" is the run's earliest kept checkpoint, or ``before`` (e.g. the source-only run of
the same pair, which is the usual reference).

Proxy A-distance (Ben-David et al., NeurIPS 2006; reported by Ganin et al., JMLR 2016):
PAD = 2 (1 - 2 eps), eps the held-out error of a linear classifier telling source features from
target features; 0 when it cannot tell them apart, 2 when it always can. Here: a logistic
regression on standardised features, trained on half of a balanced sample, tested on the other.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROWS = 1000


def proxy_a_distance(source: np.ndarray, target: np.ndarray, seed: int = 0) -> float:
    """2 (1 - 2 eps) for the held-out error eps of a source-vs-target linear classifier
    (`domain_classifier`) trained on half of a balanced sample of each."""
    from shiftray.evaluate.validators.scores import domain_classifier

    rng = np.random.default_rng(seed)
    n = min(len(source), len(target))
    s, t = source[rng.permutation(len(source))[:n]], target[rng.permutation(len(target))[:n]]
    half = n // 2
    clf = domain_classifier(s[:half], t[:half])
    x, y = np.concatenate([s[half:], t[half:]]), np.r_[np.zeros(n - half), np.ones(n - half)]
    err = float((clf.predict(x) != y).mean())
    return 2 * (1 - 2 * err)


@dataclass
class View:
    """One model's features on the source and target samples, their PCA and PAD."""

    name: str
    step: int
    source: np.ndarray
    target: np.ndarray
    pad: float

    def embedding(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.decomposition import PCA

        both = PCA(n_components=2, random_state=0).fit_transform(np.concatenate([self.source, self.target]))
        return both[: len(self.source)], both[len(self.source) :]


def _features(model, x, rows: np.ndarray, batch: int = 256) -> np.ndarray:
    import torch

    from shiftray.evaluate.metrics import input_rows

    out = []
    with torch.no_grad():
        for s in range(0, len(rows), batch):
            out.append(model(input_rows(x, rows[s : s + batch], torch.device("cpu")))[1].float().numpy())
    return np.concatenate(out)


def _sample(n: int, k: int) -> np.ndarray:
    return np.sort(np.random.default_rng(0).choice(n, min(n, k), replace=False))


def _view(name: str, ckpt: Path, model, source_x, target_x, rows: int) -> View:
    fs = _features(model, source_x, _sample(len(source_x), rows))
    ft = _features(model, target_x, _sample(len(target_x), rows))
    step = json.loads((ckpt / "state.json").read_text())["step"] if (ckpt / "state.json").is_file() else 0
    return View(name, step, fs, ft, proxy_a_distance(fs, ft))


def _confusion(model, test, k: int) -> np.ndarray:
    import torch

    from shiftray.evaluate.metrics import input_rows

    cm = np.zeros((k, k), dtype=np.int64)
    with torch.no_grad():
        for s in range(0, len(test), 500):
            idx = np.arange(s, min(s + 500, len(test)))
            pred = model(input_rows(test.x, idx, torch.device("cpu")))[0].argmax(1).numpy()
            np.add.at(cm, (np.asarray(test.y)[idx], pred), 1)
    return cm


def _figures(run_dir: Path, views: list[View], cm: np.ndarray | None, classes: list[str]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from shiftray.tracking import read_metrics

    figs = []
    records = read_metrics(run_dir)
    keys = [k for k in ("loss", "target_acc", "source_val_acc") if any(k in r for r in records)]
    keys += sorted({k for r in records for k in r if k.startswith("validator/")})
    if keys:
        cols = min(3, len(keys))
        fig = make_subplots(rows=(len(keys) + cols - 1) // cols, cols=cols, subplot_titles=keys)
        for i, k in enumerate(keys):
            pts = [r for r in records if k in r]
            fig.add_trace(go.Scatter(x=[r["step"] for r in pts], y=[r[k] for r in pts], mode="lines+markers",
                                     showlegend=False), row=i // cols + 1, col=i % cols + 1)  # fmt: skip
        fig.update_layout(title="Learning curves (target accuracy: for reporting)", height=280 * ((len(keys) + cols - 1) // cols))
        figs.append(fig)
    if cm is not None:
        per_class = np.where(cm.sum(1) > 0, 100 * np.diag(cm) / np.maximum(cm.sum(1), 1), np.nan)
        fig = make_subplots(rows=1, cols=2, subplot_titles=("per-class target accuracy", "confusion matrix (rows: true)"))
        fig.add_trace(go.Bar(x=classes, y=per_class, showlegend=False), row=1, col=1)
        fig.add_trace(go.Heatmap(z=cm, x=classes, y=classes, colorscale="Blues", showscale=False,
                                 text=cm, texttemplate="%{text}"), row=1, col=2)  # fmt: skip
        fig.update_yaxes(autorange="reversed", row=1, col=2)
        fig.update_layout(title="The final model on the target test split", height=460)
        figs.append(fig)
    fig = make_subplots(rows=1, cols=len(views),
                        subplot_titles=[f"{v.name} (step {v.step}): PAD {v.pad:.2f}" for v in views])  # fmt: skip
    for i, v in enumerate(views):
        es, et = v.embedding()
        for pts, label, colour in ((es, "source", "#4c78a8"), (et, "target", "#f58518")):
            fig.add_trace(go.Scattergl(x=pts[:, 0], y=pts[:, 1], mode="markers", name=label,
                                       legendgroup=label, showlegend=i == 0,
                                       marker={"size": 4, "color": colour, "opacity": 0.6}),
                          row=1, col=i + 1)  # fmt: skip
    fig.update_layout(title="Source and target features (PCA), before and after adaptation", height=460)
    figs.append(fig)
    return figs


def run_report(run_dir: str | Path, before: str | Path | None = None, out: str | Path | None = None,
               rows: int = ROWS) -> Path:  # fmt: skip
    """Write ``<run_dir>/report.html`` (or ``out``); returns its path."""
    from shiftray.config.load import load_spec
    from shiftray.data.loading import load_domain_data
    from shiftray.errors import UserInputError
    from shiftray.models.load import list_checkpoints, load_trained_model, resolve_checkpoint
    from shiftray.report.page import write_page

    run_dir = Path(run_dir)
    kept = list_checkpoints(run_dir)
    if not kept:
        raise UserInputError(f"{run_dir} holds no checkpoint_*: is it a shiftray run directory?")
    after = resolve_checkpoint(run_dir)
    first = resolve_checkpoint(before) if before else kept[0]
    spec = load_spec(after / "spec.yaml")
    data = load_domain_data(spec.data, with_source=True, backbone=spec.model.backbone)
    target_x = data.target.x if len(data.target) else data.target_test.x
    views = []
    if first != after:
        name = "before" if before else "earliest checkpoint"
        views.append(_view(name, first, load_trained_model(first)[0], data.source.x, target_x, rows))
    final = load_trained_model(after)[0]
    views.append(_view("final model", after, final, data.source.x, target_x, rows))
    cm = _confusion(final, data.target_test, data.num_classes) if data.target_test.y is not None else None
    figs = _figures(run_dir, views, cm, list(data.classes))
    pads = "; ".join(f"{v.name} (step {v.step}) {v.pad:.2f}" for v in views)
    acc = "" if cm is None else f" Target test accuracy {100 * np.trace(cm) / cm.sum():.2f}."
    note = "" if len(views) > 1 else (" Only one checkpoint is kept: pass --before SOURCE_RUN_DIR "
                                      "to compare with the model before adaptation.")  # fmt: skip
    intro = (
        f"<p>{html.escape(spec.data.source)} &rarr; {html.escape(spec.data.target)}, "
        f"{html.escape(spec.method.name)}, {html.escape(spec.model.backbone)}.{acc} Proxy "
        f"A-distance between source and target features: {pads}.{note}</p>"
    )  # fmt: skip
    return write_page(Path(out) if out else run_dir / "report.html", f"Run {spec.name}", intro, figs)
