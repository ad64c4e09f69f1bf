"""Transfer strategies: layer-wise rates, gradual unfreezing, feature extraction, L2-SP."""

import pytest
import torch
from conftest import synthetic_spec
from shiftray.config.load import SpecError, spec_from_dict
from shiftray.config.schema import FinetuneSpec, ModelSpec
from shiftray.finetune.regularizers import L2SP
from shiftray.finetune.schedule import stage_index, static_scale, unfreeze_scale
from shiftray.methods.base import ModelInfo
from shiftray.methods.erm import ERM, ERMParams
from shiftray.models.build import build_model
from shiftray.train.module import TrainModule
from shiftray.train.optim import build_optimizer, set_lr

STAGES = [
    {"until": 0.25, "groups": 0},
    {"until": 0.75, "groups": 1, "lr_scale": 0.5},
    {"until": 1.0, "groups": "all"},
]


def test_layer_decay_and_explicit_scales():
    ft = FinetuneSpec(backbone_lr_scale=0.1, layer_decay=0.5, group_lr_scales={0: 0.0})
    assert [static_scale(ft, g, 4) for g in range(4)] == [0.0, 0.1 * 0.25, 0.1 * 0.5, 0.1]


def test_unfreeze_stages_are_pure_functions_of_progress():
    ft = FinetuneSpec(strategy="gradual-unfreeze", stages=STAGES)
    assert [stage_index(ft, p) for p in (0.0, 0.24, 0.25, 0.8, 1.0)] == [0, 0, 1, 2, 2]
    assert [unfreeze_scale(ft, g, 3, 0.1) for g in range(3)] == [0.0, 0.0, 0.0]
    assert [unfreeze_scale(ft, g, 3, 0.5) for g in range(3)] == [0.0, 0.0, 0.5]
    assert [unfreeze_scale(ft, g, 3, 0.9) for g in range(3)] == [1.0, 1.0, 1.0]
    fe = FinetuneSpec(strategy="feature-extraction")
    assert unfreeze_scale(fe, 2, 3, 0.9) == 0.0
    with pytest.raises(ValueError, match="end at 1.0"):
        FinetuneSpec(strategy="gradual-unfreeze", stages=[{"until": 0.5, "groups": 1}])


def test_optimizer_groups_follow_timm_layer_structure():
    spec = spec_from_dict(
        synthetic_spec(
            model={"backbone": "timm/test_resnet", "bottleneck_dim": 8},
            data={"benchmark": "synthetic", "source": "a", "target": "b", "options": {"dim": 64, "image": True}},
            finetune={"strategy": "gradual-unfreeze", "stages": STAGES, "layer_decay": 0.5},
            optim={"lr": 0.1, "schedule": "constant", "weight_decay": 0.01},
        )
    )  # fmt: skip
    model = build_model(spec.model, (1, 8, 8), 3)
    module = TrainModule(model, ERM(ERMParams(), ModelInfo(8, 3)))
    opt = build_optimizer(module, spec)
    names = [g["name"] for g in opt.param_groups]
    assert names == [f"backbone.{i}" for i in range(5)] + ["bottleneck", "head"]
    set_lr(opt, spec, 0.5)  # stage 1: only the top group, at 0.5 x its decayed rate
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["backbone.4"] == pytest.approx(0.1 * 0.5) and lrs["backbone.3"] == 0.0
    assert lrs["head"] == pytest.approx(0.1)
    frozen = next(g for g in opt.param_groups if g["name"] == "backbone.0")
    assert frozen["weight_decay"] == 0.0
    set_lr(opt, spec, 0.9)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["backbone.0"] == pytest.approx(0.1 * 0.5**4)


def test_l2sp_by_hand():
    torch.manual_seed(0)
    model = build_model(
        ModelSpec(backbone="mlp", backbone_kwargs={"hidden": [4]}, bottleneck_dim=3), (5,), 2
    )
    new = list(model.bottleneck.parameters()) + list(model.head.parameters())
    reg = L2SP(model.backbone, new, alpha=0.2, beta=0.01)
    assert float(reg()) == pytest.approx(0.005 * sum(float((p**2).sum()) for p in new))
    with torch.no_grad():
        model.backbone[1].weight.add_(1.0)
    n = model.backbone[1].weight.numel()
    expected = 0.1 * n + 0.005 * sum(float((p**2).sum()) for p in new)
    assert float(reg()) == pytest.approx(expected, rel=1e-5)


def test_bad_early_stopping_needs_holdout():
    with pytest.raises(SpecError, match="source_val_fraction"):
        spec_from_dict(synthetic_spec(finetune={"early_stopping": {"metric": "source_val_acc"}}))
