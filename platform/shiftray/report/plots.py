"""Static plots with matplotlib: the comparison's bar chart (mean ± std per strategy).

Built on a bare `matplotlib.figure.Figure` (no pyplot): no global figure state and no GUI
backend, so it is safe in Ray tasks and threads; the file format follows the suffix (.svg,
.png, .pdf). SVG keeps its text as text (``svg.fonttype: none``), so the labels stay
searchable and the tests can read them, and carries no date, so a rerun writes the same file.
"""

from __future__ import annotations

from pathlib import Path


def bar_chart(
    path: Path, labels: list[str], means: list[float], stds: list[float], title: str, ylabel: str
) -> Path:
    """One bar per label at its mean, a ±std error bar, the mean written above it."""
    import matplotlib
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.6 + 0.9 * len(labels), 3.8), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.bar(labels, means, yerr=stds, capsize=4, color="#4c78a8", ecolor="black")
    ax.bar_label(bars, labels=[f"{m:.1f}" for m in means], padding=3)
    for bar, label in zip(bars, labels, strict=True):
        bar.set_gid(f"bar-{label}")  # an SVG group per bar, findable by its strategy
    if all(0 <= m - s and m + s <= 100 for m, s in zip(means, stds, strict=True)):
        ax.set_ylim(0, 105)  # percentages: the whole scale, so bars compare by eye
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", rotation_mode="anchor")
    ax.spines[["top", "right"]].set_visible(False)
    path = Path(path)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "shiftray"}):
        fig.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
    return path
