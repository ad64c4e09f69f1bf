"""Reference tests: each method's loss recomputed by hand on a tiny model."""

import math

import pytest
import torch
import torch.nn.functional as F
from shiftray.config.schema import ModelSpec
from shiftray.data.pairing import DABatch
from shiftray.methods.base import ModelInfo
from shiftray.methods.dann import DANN, DANNParams
from shiftray.methods.erm import ERM, ERMParams
from shiftray.methods.layers import grad_reverse, sigmoid_ramp
from shiftray.models.build import build_model


def tiny():
    torch.manual_seed(0)
    spec = ModelSpec(backbone="mlp", backbone_kwargs={"hidden": [6]}, bottleneck_dim=4)
    model = build_model(spec, (5,), 3)
    batch = DABatch(torch.randn(8, 5), torch.randint(0, 3, (8,)), torch.randn(8, 5) + 1)
    return model, batch


def test_erm_is_source_cross_entropy():
    model, batch = tiny()
    out = ERM(ERMParams(), ModelInfo(4, 3))(model, batch, 0.5)
    logits, _ = model(batch.x_s)
    assert torch.allclose(out.loss, F.cross_entropy(logits, batch.y_s))


def test_grl_schedule_is_pure_and_matches_paper():
    assert sigmoid_ramp(0.0) == 0.0
    assert sigmoid_ramp(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert sigmoid_ramp(0.3, 10, 0.5) == sigmoid_ramp(0.3, 10, 0.5)


def test_grad_reverse_flips_and_scales_gradient():
    x = torch.ones(3, requires_grad=True)
    (grad_reverse(x, 0.25) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.25, -0.5, -0.75]))


def test_dann_loss_and_gradients_match_hand_computation():
    model, batch = tiny()
    params = DANNParams(trade_off=0.7, disc_hidden=[5], disc_batch_norm=False)
    method = DANN(params, ModelInfo(4, 3))
    model.train(), method.train()
    p = 0.4
    out = method(model, batch, p)

    # by hand: joint forward, CE on source, BCE(source=1, target=0) on the discriminator
    logits, f = model(torch.cat([batch.x_s, batch.x_t]))
    ce = F.cross_entropy(logits[:8], batch.y_s)
    d = method.discriminator(torch.cat([f[:8], f[8:]])).squeeze(1)
    bce = 0.5 * (
        F.binary_cross_entropy(torch.sigmoid(d[:8]), torch.ones(8))
        + F.binary_cross_entropy(torch.sigmoid(d[8:]), torch.zeros(8))
    )
    assert torch.allclose(out.loss, ce + 0.7 * bce, atol=1e-6)
    coeff = 2 / (1 + math.exp(-10 * p)) - 1
    assert float(out.logs["grl_coeff"]) == pytest.approx(coeff)

    # gradients: discriminator descends the domain loss, the feature extractor ascends it (x coeff)
    first = model.head[-1].weight
    disc_w = method.discriminator[0].weight
    feat_w = model.bottleneck[0].weight
    g_disc, g_feat = torch.autograd.grad(out.loss, [disc_w, feat_w])
    (gd_ref,) = torch.autograd.grad(0.7 * bce, [disc_w], retain_graph=True)
    gf_ce, gf_bce = (
        torch.autograd.grad(ce, [feat_w], retain_graph=True)[0],
        torch.autograd.grad(0.7 * bce, [feat_w])[0],
    )
    assert torch.allclose(g_disc, gd_ref, atol=1e-6)
    assert torch.allclose(g_feat, gf_ce - coeff * gf_bce, atol=1e-6)
    assert first is not None


def test_cdan_multilinear_map_and_loss_by_hand():
    from shiftray.methods.cdan import CDAN, CDANParams

    model, batch = tiny()
    for use_entropy in (False, True):
        params = CDANParams(
            trade_off=0.5, entropy=use_entropy, disc_hidden=[7], disc_batch_norm=False
        )
        method = CDAN(params, ModelInfo(4, 3))
        assert not method.map.randomized and method.map.out_dim == 12
        out = method(model, batch, 0.3)
        logits, f = model(torch.cat([batch.x_s, batch.x_t]))
        g = F.softmax(logits, 1)
        t = torch.stack([torch.outer(g[i], f[i]).reshape(-1) for i in range(16)])  # g (x) f
        d = method.discriminator(t).squeeze(1)
        bce = F.binary_cross_entropy_with_logits(
            d, torch.cat([torch.ones(8), torch.zeros(8)]), reduction="none"
        )
        if use_entropy:
            h = -(g * torch.log(g + 1e-8)).sum(1)
            w = 1 + torch.exp(-h)
            transfer = (
                0.5 * (bce[:8] * w[:8]).sum() / w[:8].sum()
                + 0.5 * (bce[8:] * w[8:]).sum() / w[8:].sum()
            )
        else:
            transfer = 0.5 * bce[:8].mean() + 0.5 * bce[8:].mean()
        ce = F.cross_entropy(logits[:8], batch.y_s)
        assert torch.allclose(out.loss, ce + 0.5 * transfer, atol=1e-6)


def test_cdan_randomized_map_for_large_inputs():
    from shiftray.methods.cdan import CDAN, CDANParams

    method = CDAN(CDANParams(max_dim=8, randomized_dim=16, disc_hidden=[4]), ModelInfo(4, 3))
    assert method.map.randomized
    f, g = torch.randn(5, 4), F.softmax(torch.randn(5, 3), 1)
    ref = (f @ method.map.r_f) * (g @ method.map.r_g) / math.sqrt(16)
    assert torch.allclose(method.map(f, g), ref)


def test_mcc_loss_by_hand():
    from shiftray.methods.mcc import MCC, MCCParams

    model, batch = tiny()
    out = MCC(MCCParams(trade_off=2.0, temperature=2.0), ModelInfo(4, 3))(model, batch, 0.1)
    logits, _ = model(torch.cat([batch.x_s, batch.x_t]))
    y = F.softmax(logits[8:] / 2.0, 1)
    h = -(y * torch.log(y + 1e-8)).sum(1)
    w = 1 + torch.exp(-h)
    w = 8 * w / w.sum()
    c = torch.zeros(3, 3)
    for i in range(8):
        c += w[i] * torch.outer(y[i], y[i])
    c = c / c.sum(1, keepdim=True)
    mcc = (c.sum() - c.trace()) / 3
    assert torch.allclose(out.loss, F.cross_entropy(logits[:8], batch.y_s) + 2.0 * mcc, atol=1e-6)


def strong_batch():
    model, batch = tiny()
    batch.x_t_strong = batch.x_t + 0.3 * torch.randn_like(batch.x_t)
    return model, batch


def test_fixmatch_masks_by_weak_confidence():
    from shiftray.methods.consistency import FixMatch, FixMatchParams

    model, batch = strong_batch()
    model.eval()  # BatchNorm in eval: the joint forward equals per-part forwards
    for thr in (0.0, 0.4, 1.0):
        out = FixMatch(
            FixMatchParams(trade_off=2.0, threshold=thr, adamatch=False), ModelInfo(4, 3)
        )(model, batch, 0.5)
        q = F.softmax(model(batch.x_t)[0], 1)
        conf, pseudo = q.max(1)
        ce = F.cross_entropy(model(batch.x_t_strong)[0], pseudo, reduction="none")
        unsup = (ce * (conf >= thr).float()).mean()
        ref = F.cross_entropy(model(batch.x_s)[0], batch.y_s) + 2.0 * unsup
        assert torch.allclose(out.loss, ref, atol=1e-5)
    assert float(out.logs["mask_rate"]) == 0.0  # threshold 1: nothing is confident enough


def test_fixmatch_adamatch_alignment_relative_threshold_and_rampup():
    from shiftray.methods.consistency import FixMatch, FixMatchParams

    model, batch = strong_batch()
    model.eval()
    method = FixMatch(FixMatchParams(trade_off=2.0, threshold=0.6), ModelInfo(4, 3))
    for progress in (0.0, 0.25, 0.5, 0.9):
        out = method(model, batch, progress)
        p_s = F.softmax(model(batch.x_s)[0], 1)
        q = F.softmax(model(batch.x_t)[0], 1)
        q = q * p_s.mean(0) / q.mean(0)
        q = q / q.sum(1, keepdim=True)  # aligned to the source's class balance
        conf, pseudo = q.max(1)
        tau = 0.6 * p_s.max(1).values.mean()  # relative to the source confidence
        ce = F.cross_entropy(model(batch.x_t_strong)[0], pseudo, reduction="none")
        unsup = (ce * (conf >= tau).float()).mean()
        w = 2.0 * (0.5 - math.cos(min(math.pi, 2 * math.pi * progress)) / 2)
        ref = F.cross_entropy(model(batch.x_s)[0], batch.y_s) + w * unsup
        assert torch.allclose(out.loss, ref, atol=1e-5), progress
    assert w == 2.0  # full weight from half of training on
    start = method(model, batch, 0.0)  # and none at the start
    assert torch.allclose(start.loss, F.cross_entropy(model(batch.x_s)[0], batch.y_s), atol=1e-6)


def test_mean_teacher_consistency_and_ema():
    from shiftray.methods.consistency import MeanTeacher, MeanTeacherParams, rampup_weight

    model, batch = strong_batch()
    method = MeanTeacher(MeanTeacherParams(trade_off=3.0, ema=0.9, rampup=0.5), ModelInfo(4, 3))
    method.setup(model)
    assert all(not p.requires_grad for p in method.teacher.parameters())
    model.eval()
    out = method(model, batch, 0.25)
    s = F.softmax(model(batch.x_t_strong)[0], 1)
    t = F.softmax(method.teacher(batch.x_t)[0], 1)
    w = 3.0 * math.exp(-5 * (1 - 0.25 / 0.5) ** 2)
    ref = F.cross_entropy(model(batch.x_s)[0], batch.y_s) + w * ((s - t) ** 2).sum(1).mean()
    assert torch.allclose(out.loss, ref, atol=1e-6)
    assert rampup_weight(0.7, 0.5) == 1.0
    # EMA: theta' <- a theta' + (1 - a) theta, a = min(ema, 1 - 1/(step+1))
    before = [p.clone() for p in method.teacher.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    method.after_step(model, step=100, progress=0.5)
    for b, t_p, s_p in zip(before, method.teacher.parameters(), model.parameters(), strict=True):
        assert torch.allclose(t_p, 0.9 * b + 0.1 * s_p, atol=1e-6)


def test_self_training_selection_curriculum():
    from shiftray.methods.self_training import select_pseudo_labels

    q = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.05, 0.95]])
    pseudo, mask = select_pseudo_labels(q, threshold=0.75, keep=None)
    assert pseudo.tolist() == [0, 0, 0, 1, 1] and mask.tolist() == [1, 1, 0, 0, 1]
    _, mask = select_pseudo_labels(q, threshold=0.0, keep=0.5)  # top half of each class
    assert mask.tolist() == [1, 1, 0, 0, 1]
    _, mask = select_pseudo_labels(q, threshold=0.0, keep=1.0)
    assert mask.tolist() == [1, 1, 1, 1, 1]


def test_self_training_loss_by_hand():
    from shiftray.methods.self_training import SelfTraining, SelfTrainingParams

    model, batch = tiny()
    model.eval()
    params = SelfTrainingParams(
        trade_off=0.5, threshold_start=0.0, threshold_end=0.0, class_balanced=False, start=0.2
    )
    method = SelfTraining(params, ModelInfo(4, 3))
    ce_s = F.cross_entropy(model(batch.x_s)[0], batch.y_s)
    assert torch.allclose(method(model, batch, 0.1).loss, ce_s, atol=1e-6)  # before start
    lt = model(batch.x_t)[0]
    ref = ce_s + 0.5 * F.cross_entropy(lt, lt.argmax(1))
    assert torch.allclose(method(model, batch, 0.5).loss, ref, atol=1e-6)


def test_shot_clusters_and_information_maximisation():
    from shiftray.data.formats import DomainArrays
    from shiftray.methods.shot import SHOT, SHOTParams, cluster_pseudo_labels

    # two well separated clusters, predictions slightly wrong: clustering fixes them
    feats = torch.tensor([[5.0, 0.0], [4.0, 0.5], [0.0, 5.0], [0.3, 4.0]])
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    assert cluster_pseudo_labels(feats, probs).tolist() == [0, 0, 1, 1]

    model, batch = tiny()
    method = SHOT(SHOTParams(beta=0.3), ModelInfo(4, 3, num_target=8))
    assert method.lr_scales() == {"head": 0.0}
    model.eval()
    method.refresh(model, DomainArrays(batch.x_t.numpy(), None), torch.device("cpu"))
    assert method.pseudo.min() >= 0
    batch.idx_t = torch.arange(8)
    out = method(model, batch, 0.5)
    logits = model(batch.x_t)[0]
    p = F.softmax(logits, 1)
    ent = -(p * torch.log(p + 1e-8)).sum(1).mean()
    pm = p.mean(0)
    div = -(pm * torch.log(pm + 1e-8)).sum()
    ref = ent - div + 0.3 * F.cross_entropy(logits, method.pseudo)
    assert torch.allclose(out.loss, ref, atol=1e-6)


def test_distillation_loss_by_hand(tmp_path):
    from shiftray.config.load import dump_spec, spec_from_dict
    from shiftray.methods.distill import Distill, DistillParams
    from shiftray.train.checkpoint import TrainState, save_checkpoint
    from shiftray.train.module import TrainModule

    teacher, batch = tiny()
    spec = spec_from_dict(
        {
            "name": "t",
            "data": {"benchmark": "synthetic", "source": "a", "target": "b"},
            "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": [6]}, "bottleneck_dim": 4},
        }
    )
    save_checkpoint(
        tmp_path,
        TrainModule(teacher, ERM(ERMParams(), ModelInfo(4, 3))),
        None,
        TrainState(1, 1, 0),
        dump_spec(spec),
        {"classes": ["a", "b", "c"], "input_shape": [5]},
    )
    torch.manual_seed(5)
    student = build_model(
        ModelSpec(backbone="mlp", backbone_kwargs={"hidden": [3]}, bottleneck_dim=0), (5,), 3
    )
    method = Distill(
        DistillParams(teacher=str(tmp_path), temperature=2.0, alpha=0.75), ModelInfo(3, 3)
    )
    student.eval(), teacher.eval()
    out = method(student, batch, 0.0)
    x = torch.cat([batch.x_s, batch.x_t])
    zs, zt = student(x)[0], teacher(x)[0]
    pt = F.softmax(zt / 2, 1)
    kl = (pt * (torch.log(pt) - F.log_softmax(zs / 2, 1))).sum(1).mean() * 4
    ref = 0.25 * F.cross_entropy(zs[:8], batch.y_s) + 0.75 * kl
    assert torch.allclose(out.loss, ref, atol=1e-5)
