"""Optimizer with per-role parameter groups, and the learning-rate schedule as a pure function.

Each group's learning rate is ``lr * schedule(p) * static_scale * unfreeze_scale(p)`` (see
`shiftray.finetune.schedule`), set before every step from the progress p alone (no scheduler
object with hidden state), so a resumed run uses the same learning rates as an uninterrupted
one. A group whose rate is 0 is frozen at that moment: lr 0 and no weight decay.
"""

from __future__ import annotations

import math

import torch

from shiftray.config.schema import JobSpec, OptimSpec
from shiftray.finetune.schedule import static_scale, unfreeze_scale
from shiftray.train.module import TrainModule


def lr_factor(opt: OptimSpec, progress: float) -> float:
    """schedule(p): p / warmup during warmup, then, with q = (p - warmup) / (1 - warmup):
    constant 1; inv (1 + gamma q)^-power (DANN); cosine 0.5 (1 + cos(pi q)). Both decays start
    at 1 where warmup ends (no jump); q = p without warmup."""
    if opt.warmup and progress < opt.warmup:
        return progress / opt.warmup
    if opt.schedule == "constant":
        return 1.0
    q = (progress - opt.warmup) / (1.0 - opt.warmup)
    if opt.schedule == "inv":
        return (1.0 + opt.inv_gamma * q) ** (-opt.inv_power)
    return 0.5 * (1.0 + math.cos(math.pi * q))


def build_optimizer(module: TrainModule, spec: JobSpec) -> torch.optim.Optimizer:
    opt, ft = spec.optim, spec.finetune
    roles = module.model.param_groups()
    n_backbone = sum(1 for r in roles if r.startswith("backbone."))
    overrides = module.method.lr_scales()  # e.g. SHOT keeps the source classifier fixed
    l2sp = ft.l2sp_alpha > 0 or ft.l2sp_beta > 0
    groups = []
    for role, params in roles.items():
        if not params:
            continue
        g: dict = {"params": params, "name": role}
        if role.startswith("backbone."):
            idx = int(role.split(".")[1])
            g |= {"backbone_group": idx, "lr_scale": static_scale(ft, idx, n_backbone)}
        else:
            g["lr_scale"] = 1.0
        g["lr_scale"] = overrides.get(role.split(".")[0], g["lr_scale"])
        g["decay"] = 0.0 if l2sp else opt.weight_decay  # L2-SP replaces weight decay
        groups.append(g)
    method_params = [p for p in module.method.parameters() if p.requires_grad]
    if method_params:
        groups.append(
            {"params": method_params, "name": "method", "lr_scale": 1.0, "decay": opt.weight_decay}
        )
    for g in groups:
        g["n_backbone"] = n_backbone
        g["lr"], g["weight_decay"] = opt.lr * g["lr_scale"], g["decay"]
    if opt.name == "sgd":
        nesterov = opt.nesterov and opt.momentum > 0
        return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, nesterov=nesterov)
    cls = torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW
    return cls(groups, lr=opt.lr)


def set_lr(optimizer: torch.optim.Optimizer, spec: JobSpec, progress: float) -> float:
    """Set every group's lr (and zero the decay of frozen groups: ``frozen`` marks a group whose
    scale is 0 now, which `shiftray.finetune.freeze.apply_freezing` turns into no gradient and
    no optimizer state); returns the base lr."""
    factor = lr_factor(spec.optim, progress)
    for g in optimizer.param_groups:
        scale = g["lr_scale"]
        if "backbone_group" in g:
            scale *= unfreeze_scale(spec.finetune, g["backbone_group"], g["n_backbone"], progress)
        g["lr"] = spec.optim.lr * scale * factor
        g["weight_decay"] = g["decay"] if scale > 0 else 0.0
        g["frozen"] = scale == 0
    return spec.optim.lr * factor
