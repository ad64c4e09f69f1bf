"""Target-label-free scores of a model on the whole unlabelled target set, for early stopping.
Each is summed over the worker's shard and all-reduced, like accuracy (the registered
validators, `shiftray.evaluate.validators`, score a fixed sample of rows instead).

- target_entropy: mean prediction entropy E_x[H(p(x))] (lower = more confident; Morerio et al.,
  "Minimal-Entropy Correlation Alignment", ICLR 2018 use it for selection);
- target_im: information maximisation H(E_x[p(x)]) - E_x[H(p(x))] (higher = confident and
  diverse; Gomes, Krause, Perona, NeurIPS 2010; SHOT's objective).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from shiftray.data.arrays import DomainArrays, UnlabelledArrays
from shiftray.evaluate.metrics import input_rows
from shiftray.methods.layers import entropy


@torch.no_grad()
def unsupervised_scores(
    model: nn.Module, data: UnlabelledArrays | DomainArrays, batch_size: int, device: torch.device,
    rank: int = 0, world: int = 1,
) -> dict[str, float]:  # fmt: skip
    was = model.training
    model.eval()
    idx = np.arange(rank, len(data), world)
    ent_sum, count, prob_sum = torch.zeros((), dtype=torch.float64), 0, None
    for start in range(0, len(idx), batch_size):
        x = input_rows(data.x, idx[start : start + batch_size], device)
        p = F.softmax(model(x)[0].float(), dim=1).double()
        ent_sum += entropy(p).sum().cpu()
        prob_sum = p.sum(0).cpu() if prob_sum is None else prob_sum + p.sum(0).cpu()
        count += len(x)
    model.train(was)
    if prob_sum is None:  # no rows on this rank (fewer than the workers): it still all-reduces
        prob_sum = torch.zeros(model.num_classes, dtype=torch.float64)
    stats = torch.cat(
        [ent_sum.view(1), torch.tensor([float(count)], dtype=torch.float64), prob_sum]
    )
    if world > 1 and dist.is_initialized():
        reduced = stats.to(device)
        dist.all_reduce(reduced)
        stats = reduced.cpu()
    mean_ent = float(stats[0] / stats[1])
    p_bar = stats[2:] / stats[1]
    div = float(-(p_bar * torch.log(p_bar + 1e-12)).sum())
    return {"target_entropy": mean_ent, "target_im": div - mean_ent}


class EarlyStopper:
    """Tracks the best value of a metric; ``update`` returns True when it is time to stop."""

    def __init__(self, metric: str, patience: int, min_delta: float = 0.0) -> None:
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.sign = -1.0 if metric == "target_entropy" else 1.0
        self.best: float | None = None
        self.best_step = 0
        self.bad = 0

    def state(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad}

    def load(self, state: dict) -> None:
        self.best, self.best_step, self.bad = state["best"], state["best_step"], state["bad"]

    def update(self, value: float, step: int) -> bool:
        if self.best is None or self.sign * (value - self.best) > self.min_delta:
            self.best, self.best_step, self.bad = value, step, 0
        else:
            self.bad += 1
        return self.bad >= self.patience
