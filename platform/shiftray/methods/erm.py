"""Source only (empirical risk minimisation): the baseline every adaptation method must beat."""

from __future__ import annotations

import torch.nn.functional as F

from shiftray.methods.base import AdaptationMethod, StepOutput
from shiftray.methods.params import ERMParams  # torch-free


class ERM(AdaptationMethod):
    """Source only: L = CE_eps(h(x_s), y_s), eps = label smoothing. Target data is not used.

    The lower bound of the adaptation table (the "source only" rows of the DANN/CDAN papers).
    With label smoothing it trains the source model SHOT starts from (Liang et al. 2020).
    """

    Params = ERMParams

    def forward(self, model, batch, progress):
        logits, _ = model(batch.x_s)
        loss = F.cross_entropy(logits, batch.y_s, label_smoothing=self.params.label_smoothing)
        acc = (logits.argmax(1) == batch.y_s).float().mean()
        return StepOutput(loss, {"cls_loss": loss.detach(), "source_acc": acc.detach()})
