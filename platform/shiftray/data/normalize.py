"""``data.normalize``: the feature transform a job applies to every input, with statistics
fitted on its training data and kept inside the model.

- ``none``: inputs as the reader gives them;
- ``zscore``: (x - mean) / std per feature, mean and std over the labelled source and the
  unlabelled target training rows together (no test row, no label is read);
- ``l1`` / ``l2``: each row divided by its L1 / L2 norm;
- ``log1p``: log(1 + x) element-wise (counts).

Feature vectors of very small or very large magnitude train badly with the shipped learning
rates (L1-normalised bag-of-words at ~0.0025 per feature: every review in one class); z-scoring
puts any table on the scale the shipped specs were tuned for. The statistics live in the
model's ``norm_mean`` / ``norm_std`` buffers, so the checkpoint carries them to evaluation and
serving, which apply them to raw inputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from shiftray.errors import UserInputError

KINDS = ("none", "zscore", "l1", "l2", "log1p")


@dataclass(frozen=True)
class Normalization:
    kind: str = "none"
    mean: np.ndarray | None = None  # zscore: per feature, float32, the input's shape
    std: np.ndarray | None = None


class Moments:
    """Running per-feature sums in float64: the mean and std of rows seen chunk by chunk (a
    streamed table is never held whole)."""

    def __init__(self) -> None:
        self.n, self.s, self.ss = 0, None, None

    def add(self, x: np.ndarray) -> None:
        if len(x) == 0:
            return
        x = np.asarray(x, dtype=np.float64)
        s, ss = x.sum(axis=0), np.square(x).sum(axis=0)
        self.s = s if self.s is None else self.s + s
        self.ss = ss if self.ss is None else self.ss + ss
        self.n += len(x)

    def normalization(self) -> Normalization:
        if self.n == 0:
            raise UserInputError("data.normalize=zscore: no training rows to fit its statistics on")
        mean = self.s / self.n
        std = np.sqrt(np.maximum(self.ss / self.n - mean**2, 0.0))
        std = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)  # constant: as is
        return Normalization("zscore", mean.astype(np.float32), std.astype(np.float32))


def fit_normalization(kind: str, chunks: Iterable[np.ndarray]) -> Normalization:
    """Fit ``kind`` on the training inputs (source and target, in chunks of rows)."""
    if kind not in KINDS:
        raise UserInputError(f"data.normalize={kind!r}; allowed: {', '.join(KINDS)}")
    if kind != "zscore":
        return Normalization(kind)
    moments = Moments()
    for chunk in chunks:
        moments.add(chunk)
    return moments.normalization()
