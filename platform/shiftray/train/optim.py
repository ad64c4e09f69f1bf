"""Optimizer with per-role parameter groups, and the learning-rate schedule as a pure function.

Each group's learning rate is ``base_lr * group_scale * schedule(p)``, set before every step
from the progress p alone (no scheduler object with hidden state), so a resumed run uses the
same learning rates as an uninterrupted one. A group with scale 0 is frozen: lr 0 and no
weight decay (freezing is an LR mask, which stays valid under DDP).
"""

from __future__ import annotations

import math

import torch

from shiftray.config.schema import JobSpec, OptimSpec
from shiftray.train.module import TrainModule


def lr_factor(opt: OptimSpec, progress: float) -> float:
    """schedule(p): constant 1; inv (1 + gamma p)^-power (DANN); cosine 0.5 (1 + cos(pi p))."""
    if opt.warmup and progress < opt.warmup:
        return progress / opt.warmup
    if opt.schedule == "constant":
        return 1.0
    if opt.schedule == "inv":
        return (1.0 + opt.inv_gamma * progress) ** (-opt.inv_power)
    q = (progress - opt.warmup) / (1.0 - opt.warmup)
    return 0.5 * (1.0 + math.cos(math.pi * q))


def build_optimizer(module: TrainModule, spec: JobSpec) -> torch.optim.Optimizer:
    opt = spec.optim
    roles = module.model.param_groups()
    scales = {"backbone": spec.finetune.backbone_lr_scale, "bottleneck": 1.0, "head": 1.0}
    scales |= module.method.lr_scales()  # e.g. SHOT keeps the source classifier fixed
    groups = [
        {"params": params, "name": role, "lr_scale": scales[role]}
        for role, params in roles.items()
        if params
    ]
    method_params = list(module.method.parameters())
    if method_params:
        groups.append({"params": method_params, "name": "method", "lr_scale": 1.0})
    for g in groups:
        g["lr"] = opt.lr * g["lr_scale"]
        g["weight_decay"] = opt.weight_decay if g["lr_scale"] > 0 else 0.0
    if opt.name == "sgd":
        return torch.optim.SGD(
            groups, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov and opt.momentum > 0
        )
    cls = torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW
    return cls(groups, lr=opt.lr)


def set_lr(optimizer: torch.optim.Optimizer, opt: OptimSpec, progress: float) -> float:
    factor = lr_factor(opt, progress)
    for g in optimizer.param_groups:
        g["lr"] = opt.lr * g["lr_scale"] * factor
    return opt.lr * factor
