"""Self-training with pseudo-labels on the target.

Lee, "Pseudo-Label", ICML-W 2013; class-balanced selection with a curriculum as in CBST
(Zou, Yu, Kumar, Wang, ECCV 2018). With q = softmax(h(x_t)) (no gradient) and y^ = argmax q:

    tau(p)  = threshold_start + (threshold_end - threshold_start) p      (confidence curriculum)
    m_i     = 1[max q_i >= tau(p)]                                        (and, class-balanced:
              only the top fraction r(p) = min(1, keep_start + (1 - keep_start) p) most
              confident examples of each predicted class in the batch are kept)
    L = CE(h(x_s), y_s) + trade_off * ramp(p) * sum_i m_i CE(h(x_t,i), y^_i) / n_t

ramp(p) = 0 before ``start`` (train on source first), then 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from shiftray.methods.base import AdaptationMethod, StepOutput
from shiftray.methods.params import SelfTrainingParams  # torch-free


def select_pseudo_labels(
    q: torch.Tensor, threshold: float, keep: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pseudo labels, 0/1 mask): confidence above threshold, optionally top-``keep`` per class."""
    conf, pseudo = q.max(dim=1)
    mask = conf >= threshold
    if keep is not None:
        balanced = torch.zeros_like(mask)
        for c in pseudo.unique():
            members = (pseudo == c).nonzero().squeeze(1)
            k = max(1, math.ceil(keep * len(members)))
            top = members[conf[members].argsort(descending=True)[:k]]
            balanced[top] = True
        mask = mask & balanced
    return pseudo, mask.float()


class SelfTraining(AdaptationMethod):
    """Pseudo-label self-training with a confidence curriculum and class-balanced selection."""

    Params = SelfTrainingParams

    def forward(self, model, batch, progress):
        pr = self.params
        n_s = len(batch.x_s)
        logits, _ = model(torch.cat([batch.x_s, batch.x_t]))
        cls_loss = F.cross_entropy(logits[:n_s], batch.y_s)
        q = F.softmax(logits[n_s:].detach(), dim=1)
        tau = pr.threshold_start + (pr.threshold_end - pr.threshold_start) * progress
        keep = (
            min(1.0, pr.keep_start + (1.0 - pr.keep_start) * progress)
            if pr.class_balanced
            else None
        )
        pseudo, mask = select_pseudo_labels(q, tau, keep)
        unsup = (F.cross_entropy(logits[n_s:], pseudo, reduction="none") * mask).mean()
        w = pr.trade_off if progress >= pr.start else 0.0
        return StepOutput(
            cls_loss + w * unsup,
            {
                "cls_loss": cls_loss.detach(),
                "transfer_loss": unsup.detach(),
                "mask_rate": mask.mean(),
            },
        )
