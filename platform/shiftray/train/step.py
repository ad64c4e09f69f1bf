"""One optimisation step (no Ray here): forward, backward, clip, step."""

from __future__ import annotations

import torch
from torch import nn

from shiftray.data.pairing import DABatch
from shiftray.methods.base import StepOutput


def train_step(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: DABatch,
    progress: float,
    grad_clip: float | None = None,
    step: int = 0,
) -> StepOutput:
    module.train()
    optimizer.zero_grad(set_to_none=True)
    out: StepOutput = module(batch, progress)
    out.loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    optimizer.step()
    inner = getattr(module, "module", module)  # under DDP
    inner.method.after_step(inner.model, step, progress)
    return out
