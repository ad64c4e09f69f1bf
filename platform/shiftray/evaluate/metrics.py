"""Accuracy over a whole test set split across workers, summed with all-reduce.

Rank r of w evaluates examples r, r+w, r+2w, ...: every example exactly once, none padded or
repeated, so the all-reduced count equals the test-set size and accuracy is the global one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from shiftray.data.arrays import DomainArrays


@dataclass
class EvalResult:
    accuracy: float  # percent
    loss: float
    count: int
    per_class: list[float | None]  # None: no example of that class
    predicted: list[int] | None = None  # examples predicted as each class
    actual: list[int] | None = None  # examples of each class


def input_rows(x, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    """Rows ``idx`` of an input array on ``device``; `EncodedImages` decode there directly."""
    if hasattr(x, "to_tensor"):
        return x.to_tensor(idx, device)
    return torch.from_numpy(x[idx]).to(device)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: DomainArrays, batch_size: int, device: torch.device,
    rank: int = 0, world: int = 1,
) -> EvalResult:  # fmt: skip
    if data.y is None:
        raise ValueError(f"cannot evaluate on {data.domain!r}/{data.split!r}: it has no labels")
    was_training = model.training
    model.eval()
    idx = np.arange(rank, len(data), world)
    k = max(int(data.y.max()) + 1, getattr(model, "num_classes", 0))
    stats = torch.zeros(3 + 3 * k, dtype=torch.float64)  # correct, loss, count, per class: hit,
    # total, predicted
    for start in range(0, len(idx), batch_size):
        sel = idx[start : start + batch_size]
        x = input_rows(data.x, sel, device)
        y = torch.from_numpy(data.y[sel]).to(device)
        logits, _ = model(x)
        hit = (logits.argmax(1) == y).double().cpu()
        stats[0] += hit.sum()
        stats[1] += nn.functional.cross_entropy(logits.float(), y, reduction="sum").double().cpu()
        stats[2] += len(sel)
        yc = y.cpu()
        stats[3 : 3 + k] += torch.bincount(yc, weights=hit, minlength=k)[:k]
        stats[3 + k : 3 + 2 * k] += torch.bincount(yc, minlength=k)[:k].double()
        pred = logits.argmax(1).cpu().clamp(max=k - 1)
        stats[3 + 2 * k :] += torch.bincount(pred, minlength=k)[:k].double()
    if world > 1 and dist.is_initialized():
        reduced = stats.to(device)  # NCCL reduces device tensors, gloo CPU ones
        dist.all_reduce(reduced)
        stats = reduced.cpu()
    model.train(was_training)
    count = int(stats[2])
    actual = [int(v) for v in stats[3 + k : 3 + 2 * k]]
    hits = stats[3 : 3 + k].tolist()
    per_class = [100.0 * h / n if n else None for h, n in zip(hits, actual, strict=True)]
    predicted = [int(v) for v in stats[3 + 2 * k :]]
    return EvalResult(100.0 * float(stats[0]) / count, float(stats[1]) / count, count, per_class,
                      predicted, actual)  # fmt: skip
