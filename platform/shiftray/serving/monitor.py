"""Per-model sliding windows of served inputs, and the drift test over them (off the request path).

The request path only appends each answered input's features and shift score to its model's
window (`DriftMonitor.add`). A background task calls `DriftMonitor.update` every few seconds:
when the window is full and new inputs arrived, it runs the MMD test of
`shiftray.evaluate.shift.DriftTest` against the model's target reference and keeps the result,
which ``GET /v1/models/{name}/drift`` reports and the Prometheus gauges export.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np
import torch

from shiftray.evaluate.shift import DriftTest, ShiftReference

ALPHA = 0.05  # p-value below which a window is reported as drifted


@dataclass
class DriftResult:
    model: str
    window: int  # inputs in the window
    seen: int  # inputs answered since the replica loaded the model
    mmd2: float | None = None
    p_value: float | None = None
    drifted: bool | None = None
    mean_shift_score: float | None = None  # ~0.5 for target-like traffic, -> 1 off the domain
    mean_target_probability: float | None = None
    tested_at: float | None = None  # unix time of the last test
    reason: str = ""  # why there is no test yet

    def as_dict(self) -> dict:
        return asdict(self)


class _Window:
    def __init__(self, size: int) -> None:
        self.features: deque[torch.Tensor] = deque(maxlen=size)
        self.scores: deque[float] = deque(maxlen=size)
        self.target: deque[float] = deque(maxlen=size)
        self.seen = 0
        self.tested_seen = 0
        self.test: DriftTest | None = None


class DriftMonitor:
    def __init__(self, window: int) -> None:
        self.size = window
        self.windows: dict[str, _Window] = {}
        self.results: dict[str, DriftResult] = {}

    def add(self, model: str, features: torch.Tensor, shift, target) -> None:
        w = self.windows.setdefault(model, _Window(self.size))
        w.features.extend(features.unbind(0))
        if shift is not None:
            w.scores.extend(np.asarray(shift, dtype=float).tolist())
        if target is not None:
            w.target.extend(np.asarray(target, dtype=float).tolist())
        w.seen += len(features)

    def forget(self, model: str) -> None:
        self.windows.pop(model, None)

    def update(self, model: str, reference: ShiftReference | None) -> DriftResult | None:
        """Test the model's window if it is full and changed since the last test."""
        w = self.windows.get(model)
        if w is None or w.seen == w.tested_seen:
            return self.results.get(model)
        res = DriftResult(model, len(w.features), w.seen)
        if w.scores:
            res.mean_shift_score = float(np.mean(w.scores))
        if w.target:
            res.mean_target_probability = float(np.mean(w.target))
        if reference is None:
            res.reason = "the checkpoint has no shift.safetensors (trained before it was saved)"
        elif self.size > (most := DriftTest.max_window(reference)):
            res.reason = (f"this model keeps {len(reference.held_features)} held-out target rows: "
                          f"its drift test takes a window of at most {most}, and drift_window is "
                          f"{self.size}")  # fmt: skip
        elif len(w.features) < self.size:
            res.reason = f"{len(w.features)} of {self.size} inputs in the window so far"
        else:
            if w.test is None:
                w.test = DriftTest.build(reference, self.size)
            res.mmd2, res.p_value = w.test.test(torch.stack(list(w.features)))
            res.drifted, res.tested_at = res.p_value < ALPHA, time.time()
        w.tested_seen = w.seen
        self.results[model] = res
        return res

    def summary(self, model: str) -> DriftResult:
        if model in self.results:
            return self.results[model]
        w = self.windows.get(model)
        return DriftResult(model, len(w.features) if w else 0, w.seen if w else 0,
                           reason="no inputs answered yet on this replica")  # fmt: skip
