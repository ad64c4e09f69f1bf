"""What a validator reads, and how one evaluation gathers it.

A validator maps one model's outputs on a fixed sample of the unlabelled target training rows
(and, where it needs them, the held-out labelled source rows) to one number, **higher is
better**, so a search can select on any of them. None reads a target label.

The sample is the same rows at every evaluation of a run and in every trial of a search (a
seeded draw of at most ``rows`` rows), so scores are comparable across steps and trials; on
several Ray Train workers every rank scores the same rows with the same weights, so every rank
gets the same number without communication.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shiftray.data.arrays import DomainArrays
from shiftray.evaluate.metrics import input_rows

METRIC_PREFIX = "validator/"
DEFAULT_ROWS = 2048


@dataclass
class ValidationData:
    """One evaluation's outputs on the validation sample (float64 on the CPU).

    ``probs`` (N, K) and ``features`` (N, D): the target rows' class probabilities and
    bottleneck features; ``inputs`` the same rows' inputs and ``predict`` the model (inputs ->
    probabilities), for validators that probe the model with new inputs (MixVal); the
    ``source_*`` fields: the held-out labelled source rows, when the job holds some out."""

    probs: torch.Tensor
    features: torch.Tensor
    inputs: torch.Tensor | None = None
    predict: Callable[[torch.Tensor], torch.Tensor] | None = None
    source_probs: torch.Tensor | None = None
    source_features: torch.Tensor | None = None
    source_labels: torch.Tensor | None = None

    @property
    def has_source(self) -> bool:
        return self.source_probs is not None and self.source_labels is not None


Validator = Callable[[ValidationData], float]


def validator(needs_source: bool = False, needs_inputs: bool = False, mixes_inputs: bool = False):
    """Mark a function ``ValidationData -> float`` (higher is better) as a validator and say
    what it reads beyond the target outputs; ``mixes_inputs``: it mixes inputs arithmetically
    (MixVal), which token ids do not allow."""

    def mark(fn):
        fn.needs_source, fn.needs_inputs, fn.mixes_inputs = needs_source, needs_inputs, mixes_inputs
        return fn

    return mark


def needs_source(fn: Validator) -> bool:
    return bool(getattr(fn, "needs_source", False))


def sample_rows(n: int, rows: int, seed: int = 0) -> np.ndarray:
    """The validation sample: the same ``min(n, rows)`` sorted row indices for a given seed."""
    if n <= rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, rows, replace=False))


@torch.no_grad()
def _outputs(model: nn.Module, x, idx: np.ndarray, batch_size: int, device: torch.device):
    probs, feats = [], []
    for start in range(0, len(idx), batch_size):
        logits, f = model(input_rows(x, idx[start : start + batch_size], device))
        probs.append(F.softmax(logits.float(), 1).double().cpu())
        feats.append(f.float().double().cpu())
    return torch.cat(probs), torch.cat(feats)


@torch.no_grad()
def collect(
    model: nn.Module, target_x, source_val: DomainArrays | None, batch_size: int,
    device: torch.device, rows: int = DEFAULT_ROWS, with_inputs: bool = False, seed: int = 0,
) -> ValidationData:  # fmt: skip
    """Run ``model`` (in eval mode) on the validation sample of ``target_x`` and of the labelled
    ``source_val`` rows; ``with_inputs`` keeps the target inputs and a ``predict`` function.
    The caller puts the model in eval mode (`run_validators`)."""
    idx = sample_rows(len(target_x), rows, seed)
    probs, feats = _outputs(model, target_x, idx, batch_size, device)
    data = ValidationData(probs, feats)
    if with_inputs:
        data.inputs = torch.cat(
            [input_rows(target_x, idx[s : s + batch_size], "cpu") for s in range(0, len(idx), batch_size)]
        )  # fmt: skip

        def predict(x: torch.Tensor) -> torch.Tensor:
            out = []
            with torch.no_grad():
                for s in range(0, len(x), batch_size):
                    logits = model(x[s : s + batch_size].to(device))[0]
                    out.append(F.softmax(logits.float(), 1).double().cpu())
            return torch.cat(out)

        data.predict = predict
    if source_val is not None and source_val.y is not None and len(source_val):
        sidx = sample_rows(len(source_val), rows, seed)
        data.source_probs, data.source_features = _outputs(model, source_val.x, sidx, batch_size, device)
        data.source_labels = torch.from_numpy(np.asarray(source_val.y)[sidx]).long()
    return data


def score(names: list[str] | tuple[str, ...], data: ValidationData) -> dict[str, float]:
    """``{"validator/<name>": value}`` for each registered validator named."""
    from shiftray.registry import VALIDATORS

    return {f"{METRIC_PREFIX}{n}": float(VALIDATORS.get(n)(data)) for n in names}


def run_validators(
    model: nn.Module, names: list[str] | tuple[str, ...], target_x, source_val: DomainArrays | None,
    batch_size: int, device: torch.device, rows: int = DEFAULT_ROWS, seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Collect and score in eval mode (a validator that probes the model sees the evaluation
    weights and BatchNorm statistics), then restore the model's mode."""
    from shiftray.registry import VALIDATORS

    if not names:
        return {}
    with_inputs = any(getattr(VALIDATORS.get(n), "needs_inputs", False) for n in names)
    was = model.training
    model.eval()
    try:
        data = collect(model, target_x, source_val, batch_size, device, rows, with_inputs, seed)
        return score(names, data)
    finally:
        model.train(was)
