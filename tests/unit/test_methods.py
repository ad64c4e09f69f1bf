"""Reference tests: each method's loss against a hand computation from its paper's formula.

Most tests run a method on `Lookup`, a "network" whose logits are its input, so the predictions
are probabilities chosen here and each expected value is a literal or plain arithmetic on those
numbers (never the method's own helpers): a wrong sign, weight or schedule fails the test. A few
also run a tiny real model, for the joint forward pass and the gradients.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from shiftray.config.schema import ModelSpec
from shiftray.data.arrays import DomainArrays
from shiftray.data.batches.base import DABatch
from shiftray.methods.base import AdaptationMethod, ModelInfo
from shiftray.methods.dann import DANN, DANNParams, domain_adversarial_loss
from shiftray.methods.erm import ERM, ERMParams
from shiftray.methods.layers import frozen, grad_reverse, sigmoid_ramp
from shiftray.models.build import build_model
from torch import nn

ln = math.log


class Lookup(nn.Module):
    """Logits = the first ``c`` input columns; features = the rest (or the logits again)."""

    def __init__(self, c: int = 2):
        super().__init__()
        self.c = c

    def forward(self, x):
        logits = x[:, : self.c]
        return logits, (x[:, self.c :] if x.shape[1] > self.c else logits)


class Scaled(nn.Module):
    """Logits = w x: one weight and one buffer, so an EMA teacher can be followed by hand."""

    def __init__(self, w: float = 1.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))
        self.register_buffer("seen", torch.tensor(0.0))

    def forward(self, x):
        return self.w * x, x


def logits(*probs) -> torch.Tensor:
    """Logits whose softmax is the given probability rows."""
    return torch.tensor(probs, dtype=torch.float32).log()


def approx(x):
    return pytest.approx(x, rel=1e-5, abs=1e-6)


def tiny():
    torch.manual_seed(0)
    spec = ModelSpec(backbone="mlp", backbone_kwargs={"hidden": [6]}, bottleneck_dim=4)
    model = build_model(spec, (5,), 3)
    batch = DABatch(torch.randn(8, 5), torch.randint(0, 3, (8,)), torch.randn(8, 5) + 1)
    return model, batch


def test_erm_is_source_cross_entropy_with_label_smoothing():
    batch = DABatch(
        x_s=logits([0.5, 0.25, 0.25], [0.1, 0.2, 0.7]),
        y_s=torch.tensor([1, 2]),
        x_t=logits([0.2, 0.3, 0.5]),
    )
    out = ERM(ERMParams(), ModelInfo(3, 3))(Lookup(3), batch, 0.5)
    assert float(out.loss) == approx((-ln(0.25) - ln(0.7)) / 2)
    assert float(out.logs["source_acc"]) == 0.5  # the first is predicted 0
    # smoothing eps: target (1 - eps) one-hot + eps / C, so (1 - eps) CE + eps mean_c(-log p_c)
    smooth = ERM(ERMParams(label_smoothing=0.1), ModelInfo(3, 3))(Lookup(3), batch, 0.5)
    uniform = (-ln(0.5) - 2 * ln(0.25) - ln(0.1) - ln(0.2) - ln(0.7)) / 3 / 2
    assert float(smooth.loss) == approx(0.9 * (-ln(0.25) - ln(0.7)) / 2 + 0.1 * uniform)


def test_grl_ramp_is_dann_paper_schedule_and_pure():
    # Ganin & Lempitsky: lambda_p = 2 / (1 + exp(-gamma p)) - 1 with gamma = 10 (= tanh(5 p))
    for p, expected in [
        (0.0, 0.0),
        (0.1, 0.46211715726000974),
        (0.4, 0.9640275800758169),
        (1.0, 0.9999092042625952),
    ]:
        assert sigmoid_ramp(p) == pytest.approx(expected, abs=1e-12), p
    assert sigmoid_ramp(0.5, 4.0, 0.5) == pytest.approx(0.5 * 0.7615941559557649)  # tanh(1) / 2
    # a function of p alone: no call counter, the same p gives the same value in any order
    values = [sigmoid_ramp(p) for p in (0.3, 0.9, 0.3, 0.0, 0.3)]
    assert values[0] == values[2] == values[4] == pytest.approx(0.9051482536448664)


def test_grad_reverse_is_identity_forward_and_flips_scaled_gradient():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = grad_reverse(x, 0.25)
    assert y.tolist() == [1.0, -2.0, 3.0]
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [-0.25, -0.5, -0.75]


def test_domain_adversarial_loss_and_reversed_gradient_by_hand():
    # discriminator = identity: the feature is the "source" logit d; sigmoid(ln 3) = 3/4
    f_s = torch.tensor([[ln(3.0)]], requires_grad=True)
    f_t = torch.tensor([[0.0], [ln(3.0)]], requires_grad=True)
    loss, acc = domain_adversarial_loss(nn.Identity(), f_s, f_t, coeff=0.5)
    # half the mean BCE over source (label 1) plus half over target (label 0), unequal sizes
    assert float(loss.detach()) == approx(0.5 * -ln(0.75) + 0.5 * (-ln(0.5) - ln(0.25)) / 2)
    assert float(acc) == approx(2 / 3)  # d > 0 says source: the target's ln 3 is wrong
    loss.backward()
    # dL/dd = (sigmoid(d) - label) * 0.5 / n; the reversal multiplies it by -coeff
    assert f_s.grad.flatten().tolist() == approx([-0.5 * (0.75 - 1) * 0.5])
    assert f_t.grad.flatten().tolist() == approx([-0.5 * 0.5 * 0.25, -0.5 * 0.75 * 0.25])


def test_dann_loss_and_gradients_match_hand_computation():
    model, batch = tiny()
    params = DANNParams(trade_off=0.7, disc_hidden=[5], disc_batch_norm=False)
    method = DANN(params, ModelInfo(4, 3))
    model.train(), method.train()
    out = method(model, batch, 0.4)
    coeff = 0.9640275800758169  # 2 / (1 + exp(-4)) - 1
    assert float(out.logs["grl_coeff"]) == pytest.approx(coeff)

    # by hand: joint forward, CE on source, BCE(source=1, target=0) on the discriminator
    logits_, f = model(torch.cat([batch.x_s, batch.x_t]))
    ce = F.cross_entropy(logits_[:8], batch.y_s)
    d = method.discriminator(torch.cat([f[:8], f[8:]])).squeeze(1)
    bce = 0.5 * (
        F.binary_cross_entropy(torch.sigmoid(d[:8]), torch.ones(8))
        + F.binary_cross_entropy(torch.sigmoid(d[8:]), torch.zeros(8))
    )
    assert torch.allclose(out.loss, ce + 0.7 * bce, atol=1e-6)

    # the discriminator descends the domain loss, the features ascend it (x coeff), and the
    # classifier sees the source CE only
    head_w = model.head[-1].weight
    disc_w = method.discriminator[0].weight
    feat_w = model.bottleneck[0].weight
    g_head, g_disc, g_feat = torch.autograd.grad(out.loss, [head_w, disc_w, feat_w])
    gh_ce, gf_ce = torch.autograd.grad(ce, [head_w, feat_w], retain_graph=True)
    gd_bce, gf_bce = torch.autograd.grad(0.7 * bce, [disc_w, feat_w])
    assert torch.allclose(g_head, gh_ce, atol=1e-6)
    assert torch.allclose(g_disc, gd_bce, atol=1e-6)
    assert torch.allclose(g_feat, gf_ce - coeff * gf_bce, atol=1e-6)

    # no hidden state: after a step at another progress, p = 0.4 gives the same loss again
    method(model, batch, 0.9)
    again = method(model, batch, 0.4)
    assert float(again.logs["grl_coeff"]) == float(out.logs["grl_coeff"])
    assert torch.allclose(again.loss, out.loss, atol=1e-6)
    assert all(k.startswith("discriminator.") for k in method.state_dict())


def test_cdan_multilinear_map_and_loss_by_hand():
    from shiftray.methods.cdan import CDAN, CDANParams, MultilinearMap

    full = MultilinearMap(2, 2, randomized=False, out_dim=0)
    outer = full(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.25, 0.75]]))
    assert outer.tolist() == [[0.25, 0.5, 0.75, 1.5]]  # g (x) f: g_c f_j, class-major

    model, batch = tiny()
    for use_entropy in (False, True):
        params = CDANParams(
            trade_off=0.5, entropy=use_entropy, disc_hidden=[7], disc_batch_norm=False
        )
        method = CDAN(params, ModelInfo(4, 3))
        assert not method.map.randomized and method.map.out_dim == 12
        out = method(model, batch, 0.3)
        assert float(out.logs["grl_coeff"]) == pytest.approx(0.9051482536448664)  # tanh(1.5)
        logits_, f = model(torch.cat([batch.x_s, batch.x_t]))
        g = F.softmax(logits_, 1)
        t = torch.stack([torch.outer(g[i], f[i]).reshape(-1) for i in range(16)])
        d = method.discriminator(t).squeeze(1)
        bce = F.binary_cross_entropy_with_logits(
            d, torch.cat([torch.ones(8), torch.zeros(8)]), reduction="none"
        )
        if use_entropy:  # CDAN+E: w = 1 + exp(-H(g)), normalised within each domain
            h = -(g * torch.log(g + 1e-8)).sum(1)
            w = 1 + torch.exp(-h)
            transfer = (
                0.5 * (bce[:8] * w[:8]).sum() / w[:8].sum()
                + 0.5 * (bce[8:] * w[8:]).sum() / w[8:].sum()
            )
        else:
            transfer = 0.5 * bce[:8].mean() + 0.5 * bce[8:].mean()
        ce = F.cross_entropy(logits_[:8], batch.y_s)
        assert torch.allclose(out.loss, ce + 0.5 * transfer, atol=1e-6)


def test_cdan_randomized_map_for_large_inputs():
    from shiftray.methods.cdan import CDAN, CDANParams

    method = CDAN(CDANParams(max_dim=8, randomized_dim=16, disc_hidden=[4]), ModelInfo(4, 3))
    assert method.map.randomized  # 4 x 3 = 12 > max_dim
    f, g = torch.randn(5, 4), F.softmax(torch.randn(5, 3), 1)
    ref = (f @ method.map.r_f) * (g @ method.map.r_g) / 4.0  # / sqrt(16)
    assert torch.allclose(method.map(f, g), ref)


def test_mcc_loss_by_hand():
    from shiftray.methods.mcc import MCC, MCCParams, class_confusion

    # T = 2: target logits 2 log Y give Y = softmax(logits / T) = (0.5, 0.5), (0.9, 0.1)
    batch = DABatch(
        x_s=logits([0.5, 0.5]), y_s=torch.tensor([0]), x_t=2 * logits([0.5, 0.5], [0.9, 0.1])
    )
    out = MCC(MCCParams(trade_off=2.0, temperature=2.0), ModelInfo(2, 2))(Lookup(2), batch, 0.1)
    # w = 2 (1 + exp(-H)) / sum: H = ln 2 and 0.325083 -> w = 0.930963, 1.069037
    # C = sum_i w_i y_i y_i^T = [[1.098661, 0.328954], [0.328954, 0.243431]]
    # rows normalised: [[0.769579, 0.230421], [0.574707, 0.425293]]; (2 - trace) / 2
    assert float(out.logs["transfer_loss"]) == approx(0.4025648565906159)
    assert float(out.loss) == approx(ln(2) + 2.0 * 0.4025648565906159)
    # uniform predictions: every row of C~ is 1/C, so the confusion is (C - 1) / C
    assert float(class_confusion(torch.zeros(4, 3), 2.5)) == approx(2 / 3)

    model, batch = tiny()  # and through a real model's joint forward pass
    out = MCC(MCCParams(trade_off=2.0, temperature=2.0), ModelInfo(4, 3))(model, batch, 0.1)
    logits_, _ = model(torch.cat([batch.x_s, batch.x_t]))
    y = F.softmax(logits_[8:] / 2.0, 1)
    h = -(y * torch.log(y + 1e-8)).sum(1)
    w = 1 + torch.exp(-h)
    w = 8 * w / w.sum()
    c = torch.zeros(3, 3)
    for i in range(8):
        c += w[i] * torch.outer(y[i], y[i])
    c = c / c.sum(1, keepdim=True)
    mcc = (c.sum() - c.trace()) / 3
    assert torch.allclose(out.loss, F.cross_entropy(logits_[:8], batch.y_s) + 2.0 * mcc, atol=1e-6)


# FixMatch / AdaMatch on hand-chosen predictions (2 classes):
#   source p_s = (0.9, 0.1), (0.3, 0.7) with labels 0, 1: CE = (-ln 0.9 - ln 0.7) / 2
#   weak target q = (0.6, 0.4), (0.2, 0.8), (0.45, 0.55), (0.75, 0.25)
#   strong target = (0.9, 0.1), (0.25, 0.75), (0.7, 0.3), (0.6, 0.4)
CE_S = (-ln(0.9) - ln(0.7)) / 2


def fixmatch_batch():
    return DABatch(
        x_s=logits([0.9, 0.1], [0.3, 0.7]),
        y_s=torch.tensor([0, 1]),
        x_t=logits([0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.75, 0.25]),
        x_t_strong=logits([0.9, 0.1], [0.25, 0.75], [0.7, 0.3], [0.6, 0.4]),
    )


def test_fixmatch_masks_by_fixed_weak_confidence():
    from shiftray.methods.consistency import FixMatch, FixMatchParams

    # pseudo-labels argmax q = 0, 1, 1, 0 with confidences 0.6, 0.8, 0.55, 0.75
    strong_ce = [-ln(0.9), -ln(0.75), -ln(0.3), -ln(0.6)]
    for thr, mask in [(0.0, [1, 1, 1, 1]), (0.7, [0, 1, 0, 1]), (0.9, [0, 0, 0, 0])]:
        params = FixMatchParams(trade_off=2.0, threshold=thr, adamatch=False)
        for progress in (0.0, 0.7):  # no ramp-up: full weight from the start
            out = FixMatch(params, ModelInfo(2, 2))(Lookup(2), fixmatch_batch(), progress)
            unsup = sum(c * m for c, m in zip(strong_ce, mask, strict=True)) / 4
            assert float(out.loss) == approx(CE_S + 2.0 * unsup), (thr, progress)
            assert float(out.logs["mask_rate"]) == sum(mask) / 4


def test_adamatch_alignment_relative_threshold_and_rampup_by_hand():
    from shiftray.methods.consistency import FixMatch, FixMatchParams

    # alignment: q * mean(p_s) / mean(q) = q * (0.6, 0.4) / (0.5, 0.5), renormalised:
    #   (0.692, 0.308), (0.273, 0.727), (0.551, 0.449), (0.818, 0.182): the third flips to 0
    # relative threshold: tau = threshold * mean_i max p_s,i = threshold * 0.8
    #   (not max of the mean, 0.6: that would keep the third example at threshold 0.8)
    cases = [
        (0.8, [-ln(0.9), -ln(0.75), 0.0, -ln(0.6)]),  # tau 0.64: the third (0.551) is out
        (0.65, [-ln(0.9), -ln(0.75), -ln(0.7), -ln(0.6)]),  # tau 0.52: in, with label 0
    ]
    # ramp-up w(p) / trade_off = 1/2 - cos(min(pi, 2 pi p)) / 2
    ramp = [(0.0, 0.0), (0.125, 0.14644660940672627), (0.25, 0.5), (0.5, 1.0), (0.9, 1.0)]
    for thr, strong_ce in cases:
        method = FixMatch(FixMatchParams(trade_off=2.0, threshold=thr), ModelInfo(2, 2))
        for progress, w in ramp:
            out = method(Lookup(2), fixmatch_batch(), progress)
            assert float(out.logs["transfer_loss"]) == approx(sum(strong_ce) / 4)
            assert float(out.loss) == approx(CE_S + 2.0 * w * sum(strong_ce) / 4), (thr, progress)
            assert float(out.logs["mask_rate"]) == sum(c > 0 for c in strong_ce) / 4


def test_mean_teacher_consistency_rampup_and_ema_by_hand():
    from shiftray.methods.consistency import MeanTeacher, MeanTeacherParams, rampup_weight

    # Laine & Aila's ramp exp(-5 (1 - p / r)^2) until r, then 1
    assert rampup_weight(0.0, 0.5) == pytest.approx(0.006737946999085467)  # exp(-5)
    assert rampup_weight(0.25, 0.5) == pytest.approx(0.2865047968601901)  # exp(-1.25)
    assert [rampup_weight(p, r) for p, r in [(0.5, 0.5), (0.7, 0.5), (0.3, 0.0)]] == [1, 1, 1]

    model = Scaled(1.0)
    params = MeanTeacherParams(trade_off=3.0, ema=0.9, rampup=0.5)
    method = MeanTeacher(params, ModelInfo(2, 2))
    method.setup(model)
    assert all(not p.requires_grad for p in method.teacher.parameters())
    batch = DABatch(
        x_s=logits([0.75, 0.25]),
        y_s=torch.tensor([0]),
        x_t=logits([0.5, 0.5], [0.6, 0.4]),  # the teacher's view
        x_t_strong=logits([0.75, 0.25], [0.2, 0.8]),  # the student's
    )
    # squared distances 2 x 0.25^2 = 0.125 and 2 x 0.4^2 = 0.32
    for progress, w in [(0.0, 3 * 0.006737946999085467), (0.25, 0.8595143905805702), (0.7, 3.0)]:
        out = method(model, batch, progress)
        assert float(out.loss.detach()) == approx(-ln(0.75) + w * (0.125 + 0.32) / 2), progress
    confident = MeanTeacher(params.model_copy(update={"threshold": 0.55}), ModelInfo(2, 2))
    confident.setup(model)
    out = confident(model, batch, 0.7)  # the teacher's 0.5 is below 0.55: masked out
    assert float(out.loss.detach()) == approx(-ln(0.75) + 3.0 * (0 + 0.32) / 2)
    assert float(out.logs["mask_rate"]) == 0.5

    # EMA: theta' <- a theta' + (1 - a) theta with a = min(ema, 1 - 1 / (step + 1))
    with torch.no_grad():
        model.w.fill_(3.0)
        model.seen.fill_(7.0)
    method.after_step(model, step=100, progress=0.5)  # a = 0.9
    assert float(method.teacher.w) == approx(0.9 * 1.0 + 0.1 * 3.0)
    assert float(method.teacher.seen) == 7.0  # buffers are copied
    method.after_step(model, step=3, progress=0.5)  # a = min(0.9, 0.75)
    assert float(method.teacher.w) == approx(0.75 * 1.2 + 0.25 * 3.0)
    method.after_step(model, step=0, progress=0.5)  # a = 0: the first step copies the student
    assert float(method.teacher.w) == 3.0


def test_select_pseudo_labels_threshold_and_class_balance():
    from shiftray.methods.self_training import select_pseudo_labels

    q = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.05, 0.95]])
    pseudo, mask = select_pseudo_labels(q, threshold=0.75, keep=None)
    assert pseudo.tolist() == [0, 0, 0, 1, 1] and mask.tolist() == [1, 1, 0, 0, 1]
    # top ceil(0.5 n_c) of each predicted class: 2 of class 0's 3, 1 of class 1's 2
    _, mask = select_pseudo_labels(q, threshold=0.0, keep=0.5)
    assert mask.tolist() == [1, 1, 0, 0, 1]
    _, mask = select_pseudo_labels(q, threshold=0.0, keep=0.34)  # ceil(1.02) = 2, ceil(0.68) = 1
    assert mask.tolist() == [1, 1, 0, 0, 1]
    _, mask = select_pseudo_labels(q, threshold=0.85, keep=1.0)  # both rules: the stricter wins
    assert mask.tolist() == [1, 0, 0, 0, 1]


# Self-training on 8 target examples: predicted class and confidence
#   class 0: 0.93, 0.88, 0.99, 0.9, 0.97; class 1: 0.96, 0.6, 0.82
ST_CONF = [(0, 0.93), (1, 0.96), (0, 0.88), (0, 0.99), (1, 0.6), (0, 0.9), (1, 0.82), (0, 0.97)]


def test_self_training_curriculum_admits_more_pseudo_labels_as_training_goes():
    from shiftray.methods.self_training import SelfTraining, SelfTrainingParams

    rows = [[c, 1 - c] if k == 0 else [1 - c, c] for k, c in ST_CONF]
    batch = DABatch(x_s=logits([0.75, 0.25]), y_s=torch.tensor([0]), x_t=logits(*rows))
    params = SelfTrainingParams(
        trade_off=0.5, threshold_start=0.95, threshold_end=0.8, keep_start=0.5, start=0.1
    )
    method = SelfTraining(params, ModelInfo(2, 2))
    # tau(p) = 0.95 - 0.15 p and keep r(p) = 0.5 + 0.5 p of each class:
    #   p=0:   tau 0.95,  top 3 of class 0, 2 of class 1 -> 0.99, 0.97 | 0.96
    #   p=0.5: tau 0.875, top 4 of 5, 3 of 3 -> 0.99, 0.97, 0.93, 0.9 (0.88 passes tau, not
    #          the top 4) | 0.96
    #   p=1:   tau 0.8, all -> everything but 0.6
    selected = {
        0.0: [0, 1, 0, 1, 0, 0, 0, 1],
        0.5: [1, 1, 0, 1, 0, 1, 0, 1],
        1.0: [1, 1, 1, 1, 0, 1, 1, 1],
    }
    for progress, mask in selected.items():
        out = method(Lookup(2), batch, progress)
        assert float(out.logs["mask_rate"]) == sum(mask) / 8, progress
        # pseudo-label = argmax, so each selected example's CE is -ln(confidence)
        unsup = sum(-ln(c) * m for (_, c), m in zip(ST_CONF, mask, strict=True)) / 8
        assert float(out.logs["transfer_loss"]) == approx(unsup), progress
        w = 0.5 if progress >= 0.1 else 0.0  # no pseudo-labels before `start`
        assert float(out.loss) == approx(-ln(0.75) + w * unsup), progress
    # without class balance, p = 0.5 keeps all 6 above tau = 0.875
    flat = SelfTraining(params.model_copy(update={"class_balanced": False}), ModelInfo(2, 2))
    assert float(flat(Lookup(2), batch, 0.5).logs["mask_rate"]) == 6 / 8


# SHOT's clustering, with a 1 appended to each feature before normalising (as in the paper):
# the second case needs the hard round: (1, 0) lies with the x-axis cluster, but its own 0.9 for
# class 1 keeps it in class 1 after the soft (probability-weighted) round.
SHOT_CLEAR = (
    [[4.0, 0.0], [3.0, 1.0], [5.0, 1.0], [0.0, 4.0], [1.0, 3.0], [1.0, 5.0]],
    [0.9, 0.3, 0.8, 0.2, 0.6, 0.1],  # p(class 0): points 1 and 4 mis-predicted
)
SHOT_HARD = (
    [[4.0, 0.0], [5.0, 1.0], [1.0, 0.0], [6.0, 3.0], [0.0, 4.0], [1.0, 5.0]],
    [0.7, 0.9, 0.1, 0.6, 0.1, 0.9],  # points 2 and 5 mis-predicted
)


def shot_inputs(case):
    feats, p0 = case
    probs = torch.tensor([[p, 1 - p] for p in p0])
    return torch.tensor(feats), probs


def test_shot_cluster_pseudo_labels_by_hand():
    from shiftray.methods.shot import cluster_pseudo_labels

    feats, probs = shot_inputs(SHOT_CLEAR)
    assert probs.argmax(1).tolist() == [0, 1, 0, 1, 0, 1]
    # soft centroids (normalised rows of p^T f): (0.73, 0.37, 0.25), (0.39, 0.73, 0.25);
    # each point is nearer (cosine) its own cluster's: the two mistakes are corrected
    assert cluster_pseudo_labels(feats, probs).tolist() == [0, 0, 0, 1, 1, 1]

    feats, probs = shot_inputs(SHOT_HARD)
    assert probs.argmax(1).tolist() == [0, 0, 1, 0, 1, 0]
    assert cluster_pseudo_labels(feats, probs, rounds=1).tolist() == [0, 0, 1, 0, 1, 1]
    assert cluster_pseudo_labels(feats, probs).tolist() == [0, 0, 0, 0, 1, 1]


def test_shot_refresh_and_loss_by_hand():
    from shiftray.methods.shot import SHOT, SHOTParams

    # refresh: the whole target set, in batches, through the model -> clustered labels
    feats, probs = shot_inputs(SHOT_HARD)
    target = DomainArrays(torch.cat([probs.log(), feats], 1).numpy().astype(np.float32), None)
    method = SHOT(SHOTParams(eval_batch_size=4), ModelInfo(2, 2, num_target=6))
    assert method.lr_scales() == {"head": 0.0} and not method.uses_source
    model = Lookup(2).train()
    method.refresh(model, target, torch.device("cpu"))
    assert method.pseudo.tolist() == [0, 0, 0, 0, 1, 1] and model.training

    # the loss, with pseudo-labels set by hand for target examples 3 (class 1) and 1 (class 0)
    method = SHOT(SHOTParams(beta=0.3, im_weight=2.0), ModelInfo(2, 2, num_target=5))
    method.pseudo.copy_(torch.tensor([-1, 0, -1, 1, -1]))
    batch = DABatch(
        x_s=None, y_s=None, x_t=logits([0.5, 0.5], [0.8, 0.2]), idx_t=torch.tensor([3, 1])
    )
    out = method(Lookup(2), batch, 0.5)
    ent = (ln(2) + (-0.8 * ln(0.8) - 0.2 * ln(0.2))) / 2  # mean entropy
    div = -0.65 * ln(0.65) - 0.35 * ln(0.35)  # entropy of the mean prediction (0.65, 0.35)
    pl = (-ln(0.5) - ln(0.8)) / 2  # CE against labels 1 and 0
    assert float(out.logs["ent"]) == approx(ent) and float(out.logs["div"]) == approx(div)
    assert float(out.logs["pl_loss"]) == approx(pl)
    assert float(out.loss) == approx(2.0 * (ent - div) + 0.3 * pl)  # = 0.0360999...


def distill_from(teacher, **params):
    """Distill with ``teacher`` set directly: the loss alone (loading a teacher checkpoint is
    tested with the checkpoints)."""
    from shiftray.methods.distill import Distill, DistillParams

    method = Distill.__new__(Distill)
    AdaptationMethod.__init__(method, DistillParams(teacher="-", **params), ModelInfo(2, 2))
    method.teacher = frozen(teacher)
    return method


def test_distillation_loss_by_hand():
    # student logits = x, teacher logits = 2x; source x = (ln 3, 0), label 1; target x = (0, 0)
    batch = DABatch(
        x_s=torch.tensor([[ln(3.0), 0.0]]), y_s=torch.tensor([1]), x_t=torch.zeros(1, 2)
    )
    hard = ln(4.0)  # softmax(ln 3, 0) = (3/4, 1/4)
    # T = 2 on the source row: teacher softmax(ln 3, 0) = (3/4, 1/4), student
    # softmax(ln 3 / 2, 0) = (r, 1) / (1 + r), r = sqrt 3; on the target row both are uniform
    r = math.sqrt(3.0)
    kl = 0.75 * ln(0.75 * (1 + r) / r) + 0.25 * ln(0.25 * (1 + r))
    method = distill_from(Scaled(2.0), temperature=2.0, alpha=0.75, inputs="both")
    out = method(Lookup(2), batch, 0.0)
    assert float(out.logs["transfer_loss"]) == approx(4 * kl / 2)  # T^2 x mean over 2 rows
    assert float(out.loss) == approx(0.25 * hard + 0.75 * 4 * kl / 2)  # = 0.392680...
    target_only = distill_from(Scaled(2.0), temperature=2.0, alpha=0.75, inputs="target")
    assert float(target_only(Lookup(2), batch, 0.0).loss) == approx(0.25 * hard)
