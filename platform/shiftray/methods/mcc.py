"""MCC: minimum class confusion on the target.

Jin, Wang, Long, Wang, "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020.

With target predictions rescaled by temperature T, Y = softmax(h_t / T) (B x C):

    w_i = B (1 + exp(-H(Y_i))) / sum_j (1 + exp(-H(Y_j)))       (certain examples count more)
    C   = Y^T diag(w) Y                                          (class correlation, C x C)
    C~  = C with each row divided by its sum
    L_mcc = (sum_jk C~_jk - trace(C~)) / C                       (between-class confusion)

    L = CE(h_s, y_s) + trade_off * L_mcc
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shiftray.methods.base import AdaptationMethod, StepOutput
from shiftray.methods.layers import entropy
from shiftray.methods.params import MCCParams  # torch-free


def class_confusion(logits_t: torch.Tensor, temperature: float) -> torch.Tensor:
    b, c = logits_t.shape
    y = F.softmax(logits_t / temperature, dim=1)
    w = 1.0 + torch.exp(-entropy(y).detach())
    w = b * w / w.sum()
    conf = (y * w.unsqueeze(1)).t() @ y
    conf = conf / conf.sum(dim=1, keepdim=True)
    return (conf.sum() - torch.trace(conf)) / c


class MCC(AdaptationMethod):
    """Minimum class confusion (Jin et al., ECCV 2020): no discriminator, one extra loss."""

    Params = MCCParams

    def forward(self, model, batch, progress):
        n_s = len(batch.x_s)
        logits, _ = model(torch.cat([batch.x_s, batch.x_t]))
        cls_loss = F.cross_entropy(logits[:n_s], batch.y_s)
        mcc = class_confusion(logits[n_s:], self.params.temperature)
        return StepOutput(
            cls_loss + self.params.trade_off * mcc,
            {"cls_loss": cls_loss.detach(), "transfer_loss": mcc.detach()},
        )
