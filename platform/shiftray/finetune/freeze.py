"""Frozen parameter groups get no gradient and no optimizer state.

A group whose learning-rate scale is 0 at progress p (feature extraction; gradual unfreezing
before the group's stage; SHOT's source classifier) is frozen: its parameters stop requiring
gradients, so autograd computes none for them (the compute is saved), and optimizers skip
parameters without a gradient, so no momentum or Adam moments pile up while frozen and there is
no stale kick at unfreeze. Which groups are frozen is a pure function of p, so a resumed run
freezes exactly what the uninterrupted one did.

DDP fixes the set of parameters it reduces when it is built, so the loop re-wraps the module
whenever `apply_freezing` reports a change (a few times per run, on every rank at the same
step: the change is a function of p).
"""

from __future__ import annotations

import torch


def apply_freezing(optimizer: torch.optim.Optimizer) -> bool:
    """``requires_grad`` = not ``group["frozen"]`` for every group `set_lr` marked; returns
    True when any parameter changed."""
    changed = False
    for group in optimizer.param_groups:
        trainable = not group.get("frozen", False)
        for p in group["params"]:
            if p.requires_grad != trainable:
                p.requires_grad_(trainable)
                changed = True
    return changed
