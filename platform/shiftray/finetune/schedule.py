"""Per-group learning-rate scales: discriminative rates and gradual unfreezing.

Backbone layer groups are numbered from the input (0, the stem) to the output (L-1). A group's
learning rate at progress p is

    lr(g, p) = lr * schedule(p) * static(g) * unfreeze(g, p)

static(g) = backbone_lr_scale * layer_decay^(L-1-g) (or group_lr_scales[g]) for backbone
groups, 1 for new layers (ULMFiT's discriminative fine-tuning, Howard & Ruder 2018; BEiT-style
layer decay). unfreeze(g, p) is a pure function of p: during the stage with ``groups = k``,
the top k backbone groups get the stage's lr_scale and the rest 0 (frozen: the LR mask keeps
DDP's buckets valid, unlike toggling requires_grad). Feature extraction is unfreeze = 0 always.
"""

from __future__ import annotations

from shiftray.config.schema import FinetuneSpec


def stage_index(ft: FinetuneSpec, progress: float) -> int:
    for i, stage in enumerate(ft.stages):
        if progress < stage.until:
            return i
    return len(ft.stages) - 1


def static_scale(ft: FinetuneSpec, group: int, n_groups: int) -> float:
    if group in ft.group_lr_scales:
        return ft.group_lr_scales[group]
    scale = ft.backbone_lr_scale
    if ft.layer_decay is not None:
        scale *= ft.layer_decay ** (n_groups - 1 - group)
    return scale


def unfreeze_scale(ft: FinetuneSpec, group: int, n_groups: int, progress: float) -> float:
    if ft.strategy == "feature-extraction":
        return 0.0
    if ft.strategy != "gradual-unfreeze":
        return 1.0
    stage = ft.stages[stage_index(ft, progress)]
    k = n_groups if stage.groups == "all" else min(stage.groups, n_groups)
    return stage.lr_scale if group >= n_groups - k else 0.0
