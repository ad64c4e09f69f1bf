"""How well serving's shift signals separate the target domain from others, on a digits run.

    python bench/shift_signal.py [RUN_DIR]        # default runs/demo/mnist-usps-dann (make demo)

For the run's target test inputs (USPS for MNIST->USPS) against the other domain's test inputs
(MNIST) and uniform noise images: ROC-AUC of ``shift_score`` (higher = less target-like) and of
the discriminator's P(target) (lower = less target-like) when the model has one; and the drift
test (MMD^2, p-value, mean shift_score) on a 256-input window of each. Domain labels only; no
class label is read. Writes bench/results/cpu-shift-signal.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402


def auc(inside: np.ndarray, outside: np.ndarray) -> float:
    """ROC-AUC of 'outside scores higher' (Mann-Whitney U, ties half)."""
    diff = outside[:, None] - inside[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def main() -> None:
    from shiftray.config.load import load_spec
    from shiftray.data.loading import load_job_data
    from shiftray.evaluate.shift import DriftTest
    from shiftray.models.load import resolve_checkpoint
    from shiftray.serving.predictor import Predictor

    run = sys.argv[1] if len(sys.argv) > 1 else "runs/demo/mnist-usps-dann"
    ckpt = resolve_checkpoint(run)
    spec = load_spec(ckpt / "spec.yaml")
    other = spec.data.source  # the other digits domain
    target = load_job_data(spec).target_test.x
    flipped = load_spec(ckpt / "spec.yaml", [f"data.source={spec.data.target}",
                                              f"data.target={other}"])  # fmt: skip
    inputs = {
        spec.data.target: target,
        other: load_job_data(flipped).target_test.x[: len(target)],
        "noise": np.random.default_rng(0).random(target.shape).astype(np.float32),
    }
    pred = Predictor(ckpt)
    if pred.reference is None:
        raise SystemExit(f"{ckpt} has no shift.safetensors (trained before it was saved)")
    outs = {k: pred(x) for k, x in inputs.items()}
    drift = DriftTest.build(pred.reference, 256)
    rows = []
    for name, out in outs.items():
        row = {"inputs": name, "n": len(out.index),
               "mean shift_score": round(float(out.shift_score.mean()), 3)}  # fmt: skip
        if name != spec.data.target:
            row["AUC shift_score"] = round(auc(outs[spec.data.target].shift_score, out.shift_score), 3)
            if out.target_probability is not None:
                t = outs[spec.data.target].target_probability
                row["AUC discriminator"] = round(auc(-t, -out.target_probability), 3)
        mmd, p = drift.test(out.features[:256])
        row |= {"window MMD^2": round(mmd, 5), "window p": round(p, 3)}
        rows.append(row)
    cols = ["inputs", "n", "mean shift_score", "AUC shift_score", "AUC discriminator",
            "window MMD^2", "window p"]  # fmt: skip
    print(f"{run} ({spec.method.name}, {spec.data.source}->{spec.data.target}); AUC: "
          f"{spec.data.target} test inputs vs each other kind")  # fmt: skip
    print_table(rows, cols)
    write_result("cpu-shift-signal", {"run": str(run), "rows": rows})


if __name__ == "__main__":
    main()
