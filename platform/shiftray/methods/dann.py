"""DANN: domain-adversarial training with a gradient reversal layer.

Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015;
Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 17(59), 2016.

With features f = G(x), classifier C and domain discriminator D (output: logit of "source"),

    L = CE(C(f_s), y_s) + trade_off * [ BCE(D(R_l(f_s)), 1) + BCE(D(R_l(f_t)), 0) ] / 2

where R_l is the gradient reversal layer: identity forward, gradient times -l backward. So D
minimises the domain loss while G maximises it (a min-max game solved by one SGD step).
l follows the paper's schedule l(p) = grl_max * (2 / (1 + exp(-grl_alpha p)) - 1), a pure
function of progress p (no iteration counter hidden in the layer). Source and target go
through the network in one joint forward pass, so BatchNorm statistics see both domains.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shiftray.methods.base import AdaptationMethod, StepOutput
from shiftray.methods.layers import grad_reverse, sigmoid_ramp
from shiftray.methods.params import DANNParams  # torch-free
from shiftray.models.heads import DomainDiscriminator


def domain_adversarial_loss(
    discriminator: torch.nn.Module, f_s: torch.Tensor, f_t: torch.Tensor, coeff: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean BCE of the discriminator on reversed source (label 1) and target (label 0) features."""
    n_s, n_t = len(f_s), len(f_t)
    d = discriminator(grad_reverse(torch.cat([f_s, f_t]), coeff)).squeeze(1)
    labels = torch.cat([d.new_ones(n_s), d.new_zeros(n_t)])
    # 0.5 (mean over source + mean over target), in one call: per-example weights 0.5 / n
    weight = torch.cat([d.new_full((n_s,), 0.5 / n_s), d.new_full((n_t,), 0.5 / n_t)])
    loss = F.binary_cross_entropy_with_logits(d, labels, weight=weight, reduction="sum")
    with torch.no_grad():
        acc = ((d > 0).float() == labels).float().mean()
    return loss, acc


class DANN(AdaptationMethod):
    """Domain-adversarial neural network (Ganin et al., JMLR 2016), gradient reversal."""

    Params = DANNParams

    def __init__(self, params: DANNParams, info) -> None:
        super().__init__(params, info)
        self.discriminator = DomainDiscriminator(
            info.feature_dim, params.disc_hidden, params.disc_batch_norm, params.disc_dropout
        )

    has_discriminator = True

    def domain_logit(self, logits, features):
        return self.discriminator(features).squeeze(1)

    def grl_coeff(self, progress: float) -> float:
        return sigmoid_ramp(progress, self.params.grl_alpha, self.params.grl_max)

    def forward(self, model, batch, progress):
        n_s = len(batch.x_s)
        logits, features = model(torch.cat([batch.x_s, batch.x_t]))
        cls_loss = F.cross_entropy(logits[:n_s], batch.y_s)
        coeff = self.grl_coeff(progress)
        transfer, domain_acc = domain_adversarial_loss(
            self.discriminator, features[:n_s], features[n_s:], coeff
        )
        loss = cls_loss + self.params.trade_off * transfer
        logs = {
            "cls_loss": cls_loss.detach(),
            "transfer_loss": transfer.detach(),
            "domain_acc": domain_acc.detach(),
            "source_acc": (logits[:n_s].argmax(1) == batch.y_s).float().mean().detach(),
            "grl_coeff": torch.tensor(coeff),
        }
        return StepOutput(loss, logs)
