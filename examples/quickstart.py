"""shiftray from Python: adapt Amazon reviews from books to DVDs, predict, and plot.

    python examples/quickstart.py [OUT_DIR]      # about a minute on two CPU cores

Uses only the public API (`import shiftray`): load a shipped job spec with overrides, train it
in this process, load the trained run, predict on the target domain's test reviews, and write
a plotly page of the per-input shift score by whether the prediction was right. CI runs it.
"""

import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import shiftray

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/examples")
job = shiftray.load_job(
    "jobs/amazon/dann.yaml",
    ["name=quickstart-books-dvd", "train.steps=300", "tracking.wandb=disabled",
     f"tracking.output_dir={out}"],
)  # fmt: skip
run = shiftray.fit(job, ray=False, restart=True, progress=False)
print(f"trained {run.run_dir}: target accuracy {run.target_acc:.2f}% (reported, never used)")

model = shiftray.load(run.run_dir)
test = shiftray.load_data(job).target_test  # labelled DVD reviews, for reporting only
pred = model.predict(test.x)
right = pred.index == test.y
print(f"{len(pred)} DVD reviews: {right.mean():.1%} right; mean shift score "
      f"{pred.shift_score[right].mean():.2f} when right, {pred.shift_score[~right].mean():.2f} "
      "when wrong")  # fmt: skip

fig = go.Figure([go.Histogram(x=pred.shift_score[mask], name=name, opacity=0.6, nbinsx=20)
                 for mask, name in ((right, "right"), (~right, "wrong"))])  # fmt: skip
fig.update_layout(barmode="overlay", xaxis_title="shift score", yaxis_title="reviews",
                  title="Amazon books -> DVD: shift score of each test review")  # fmt: skip
page = out / "quickstart-shift-score.html"
fig.write_html(page, include_plotlyjs=True)  # self-contained: opens offline
print(f"wrote {page}")
assert np.isfinite(pred.probabilities).all()
