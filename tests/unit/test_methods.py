"""Reference tests: each method's loss recomputed by hand on a tiny model."""

import math

import pytest
import torch
import torch.nn.functional as F
from shiftray.config.schema import ModelSpec
from shiftray.data.pairing import DABatch
from shiftray.methods.base import ModelInfo, NoParams
from shiftray.methods.dann import DANN, DANNParams
from shiftray.methods.erm import ERM
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
    out = ERM(NoParams(), ModelInfo(4, 3))(model, batch, 0.5)
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
