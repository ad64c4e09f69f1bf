"""CDAN and CDAN+E: conditional domain-adversarial networks.

Long, Cao, Wang, Jordan, "Conditional Adversarial Domain Adaptation", NeurIPS 2018.

The discriminator sees the multilinear map of features f and class predictions g = softmax(h):

    T(f, g) = f (x) g            (outer product, flattened: d_f * C inputs)
    T(f, g) = (R_f f) * (R_g g) / sqrt(d)   (randomized, fixed Gaussian R_f, R_g; when d_f * C > max_dim)

    L = CE(h_s, y_s) + trade_off * sum_i w_i BCE(D(R_l(T_i)), domain_i) / sum_i w_i

g is detached (the adversarial gradient flows into f only, as in the paper's code). CDAN+E
(``entropy: true``) weights each example by w = 1 + exp(-H(g)), so confident, transferable
examples count more; without it w = 1. R_l is DANN's gradient reversal with the same schedule.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from shiftray.methods.base import AdaptationMethod, StepOutput
from shiftray.methods.layers import entropy, grad_reverse, sigmoid_ramp
from shiftray.methods.params import CDANParams  # torch-free
from shiftray.models.heads import DomainDiscriminator


class MultilinearMap(nn.Module):
    """T(f, g): full outer product, or its randomized approximation (fixed random matrices)."""

    def __init__(
        self, feature_dim: int, num_classes: int, randomized: bool, out_dim: int, seed: int = 0
    ):
        super().__init__()
        self.randomized = randomized
        if randomized:
            gen = torch.Generator().manual_seed(seed)
            self.register_buffer("r_f", torch.randn(feature_dim, out_dim, generator=gen))
            self.register_buffer("r_g", torch.randn(num_classes, out_dim, generator=gen))
            self.out_dim = out_dim
        else:
            self.out_dim = feature_dim * num_classes

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.randomized:
            return (f @ self.r_f) * (g @ self.r_g) / math.sqrt(self.out_dim)
        return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


class CDAN(AdaptationMethod):
    """Conditional adversarial adaptation (Long et al., NeurIPS 2018); CDAN+E with entropy: true."""

    Params = CDANParams

    def __init__(self, params: CDANParams, info) -> None:
        super().__init__(params, info)
        full = info.feature_dim * info.num_classes
        randomized = params.randomized if params.randomized is not None else full > params.max_dim
        self.map = MultilinearMap(
            info.feature_dim, info.num_classes, randomized, params.randomized_dim
        )
        self.discriminator = DomainDiscriminator(
            self.map.out_dim, params.disc_hidden, params.disc_batch_norm
        )

    has_discriminator = True

    def domain_logit(self, logits, features):
        return self.discriminator(self.map(features, F.softmax(logits, dim=1))).squeeze(1)

    def forward(self, model, batch, progress):
        n_s = len(batch.x_s)
        logits, f = model(torch.cat([batch.x_s, batch.x_t]))
        cls_loss = F.cross_entropy(logits[:n_s], batch.y_s)
        g = F.softmax(logits, dim=1).detach()
        coeff = sigmoid_ramp(progress, self.params.grl_alpha, self.params.grl_max)
        d = self.discriminator(grad_reverse(self.map(f, g), coeff)).squeeze(1)
        labels = torch.cat([d.new_ones(n_s), d.new_zeros(len(d) - n_s)])
        if self.params.entropy:
            w = 1.0 + torch.exp(-entropy(g))
            w = torch.cat([w[:n_s] / w[:n_s].sum(), w[n_s:] / w[n_s:].sum()]) * 0.5
        else:
            w = torch.cat(
                [d.new_full((n_s,), 0.5 / n_s), d.new_full((len(d) - n_s,), 0.5 / (len(d) - n_s))]
            )
        transfer = (F.binary_cross_entropy_with_logits(d, labels, reduction="none") * w).sum()
        loss = cls_loss + self.params.trade_off * transfer
        return StepOutput(
            loss,
            {
                "cls_loss": cls_loss.detach(),
                "transfer_loss": transfer.detach(),
                "domain_acc": ((d > 0).float() == labels).float().mean().detach(),
                "grl_coeff": torch.tensor(coeff),
            },
        )
