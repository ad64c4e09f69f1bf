"""Learning-rate schedules against hand values: lr_factor(p), and set_lr on per-group scales."""

import pytest
import torch
from shiftray.config.schema import FinetuneSpec, JobSpec, OptimSpec
from shiftray.finetune.schedule import static_scale
from shiftray.train.optim import lr_factor, set_lr


def factors(progresses, **optim):
    opt = OptimSpec(**optim)
    return [lr_factor(opt, p) for p in progresses]


def test_inv_is_dann_annealing():
    # Ganin & Lempitsky: lr_p = lr0 (1 + 10 p)^-0.75
    assert factors([0.0, 0.1, 0.5, 1.0], schedule="inv") == pytest.approx(
        [1.0, 0.5946035575013605, 0.26084743001221455, 0.16556002607617018]  # 2, 6, 11^-0.75
    )
    assert factors([0.5], schedule="inv", inv_gamma=2.0, inv_power=0.5) == pytest.approx(
        [0.7071067811865476]  # 2^-0.5
    )


def test_cosine_and_constant():
    assert factors([0.0, 0.25, 0.5, 0.75, 1.0], schedule="cosine") == pytest.approx(
        [1.0, 0.8535533905932737, 0.5, 0.14644660940672627, 0.0], abs=1e-12
    )
    assert factors([0.0, 0.3, 1.0], schedule="constant") == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "schedule, after",
    [
        # q = (p - 0.2) / 0.8 after warmup: p = 0.2, 0.6, 1 -> q = 0, 0.5, 1
        ("cosine", [1.0, 0.5, 0.0]),
        ("inv", [1.0, 0.26084743001221455, 0.16556002607617018]),  # (1 + 10 q)^-0.75
        ("constant", [1.0, 1.0, 1.0]),
    ],
)
def test_warmup_is_linear_from_zero_then_the_schedule_starts_at_one(schedule, after):
    during = factors([0.0, 0.05, 0.1, 0.15], schedule=schedule, warmup=0.2)
    assert during == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert factors([0.2, 0.6, 1.0], schedule=schedule, warmup=0.2) == pytest.approx(
        after, abs=1e-12
    )
    # continuous where warmup ends: no jump between the last warmup step and the first after
    below, at = factors([0.2 - 1e-9, 0.2], schedule=schedule, warmup=0.2)
    assert at == pytest.approx(below, abs=1e-6)


def one_param_groups(*groups):
    """A tiny SGD optimizer with one parameter per group dict (as build_optimizer lays them)."""
    return torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.zeros(1))], **g} for g in groups], lr=1.0
    )


def job(**over) -> JobSpec:
    # set_lr reads only optim and finetune: no data spec (and no dataset registry) is needed
    return JobSpec.model_construct(**over)


STAGES = [
    {"until": 0.25, "groups": 0},
    {"until": 0.75, "groups": 1, "lr_scale": 0.5},
    {"until": 1.0, "groups": "all"},
]


def test_set_lr_gradual_unfreezing_with_layer_decay_by_hand():
    ft = FinetuneSpec(
        strategy="gradual-unfreeze", stages=STAGES, backbone_lr_scale=0.2, layer_decay=0.5
    )
    # discriminative rates over 3 backbone groups: 0.2 x 0.5^(2 - g)
    scales = [0.05, 0.1, 0.2]
    assert [static_scale(ft, g, 3) for g in range(3)] == pytest.approx(scales)
    backbone = [
        {"name": f"backbone.{g}", "backbone_group": g, "n_backbone": 3, "lr_scale": s}
        for g, s in enumerate(scales)
    ]
    opt = one_param_groups(
        *backbone,
        {"name": "head", "lr_scale": 1.0},
        {"name": "frozen_head", "lr_scale": 0.0},  # e.g. SHOT's source classifier
    )
    for g in opt.param_groups:
        g["decay"] = 0.01
    spec = job(optim=OptimSpec(lr=0.1, schedule="constant"), finetune=ft)

    def lrs(progress):
        base = set_lr(opt, spec, progress)
        return (
            base,
            [g["lr"] for g in opt.param_groups],
            [g["weight_decay"] for g in opt.param_groups],
        )

    # stage 0 (p < 0.25): head only
    base, lr, wd = lrs(0.1)
    assert base == pytest.approx(0.1)
    assert lr == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.0])
    assert wd == [0.0, 0.0, 0.0, 0.01, 0.0]  # a frozen group gets no weight decay either
    # stage 1 (p < 0.75): the top backbone group at 0.5 x its own rate
    _, lr, wd = lrs(0.5)
    assert lr == pytest.approx([0.0, 0.0, 0.1 * 0.2 * 0.5, 0.1, 0.0])
    assert wd == [0.0, 0.0, 0.01, 0.01, 0.0]
    # stage 2: everything, at the discriminative rates
    _, lr, _ = lrs(0.9)
    assert lr == pytest.approx([0.1 * 0.05, 0.1 * 0.1, 0.1 * 0.2, 0.1, 0.0])

    # with a schedule on top: cosine at p = 0.5 halves every group's rate
    spec = job(optim=OptimSpec(lr=0.1, schedule="cosine"), finetune=ft)
    base, lr, _ = lrs(0.5)
    assert base == pytest.approx(0.05)
    assert lr == pytest.approx([0.0, 0.0, 0.05 * 0.2 * 0.5, 0.05, 0.0])


def test_set_lr_fine_tune_and_feature_extraction():
    groups = [
        {"name": "backbone.0", "backbone_group": 0, "n_backbone": 2, "lr_scale": 0.1},
        {"name": "backbone.1", "backbone_group": 1, "n_backbone": 2, "lr_scale": 0.1},
        {"name": "head", "lr_scale": 1.0},
    ]
    opt = one_param_groups(*groups)
    for g in opt.param_groups:
        g["decay"] = 0.001
    inv = OptimSpec(lr=0.01, schedule="inv")
    # fine-tune: every group trains, DANN annealing at p = 0.1: x 2^-0.75
    set_lr(opt, job(optim=inv, finetune=FinetuneSpec()), 0.1)
    f = 0.5946035575013605
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3 * f, 1e-3 * f, 1e-2 * f])
    # feature extraction: the backbone never trains
    set_lr(opt, job(optim=inv, finetune=FinetuneSpec(strategy="feature-extraction")), 0.1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.0, 0.0, 1e-2 * f])
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.0, 0.001]
