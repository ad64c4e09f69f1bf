"""Consistency regularisation on the target: FixMatch and Mean Teacher.

FixMatch (Sohn et al., NeurIPS 2020), used for adaptation as in its DA follow-ups: with a weak
view x_w and a strong view x_st of each target example, q = softmax(h(x_w)) (no gradient),

    L = CE(h(x_s), y_s) + w(p) * mean_i 1[max q_i >= tau] CE(h(x_st,i), argmax q_i)

Plain FixMatch (``adamatch: false``: tau fixed, w = trade_off) collapses across a domain gap
(measured here on MNIST->USPS: target accuracy falls while the mask rate climbs). The default
adds AdaMatch's three fixes (Berthelot et al., "AdaMatch", ICLR 2022), which are FixMatch for
domain adaptation:

- distribution alignment: q <- normalize(q * mean_batch(p_s) / mean_batch(q)), with p_s the
  source predictions, so target pseudo-labels follow the source's class balance;
- relative threshold: tau = threshold * mean_batch(max p_s), the threshold scaled by how
  confident the model is on labelled data (low early in training, when it knows little);
- ramp-up: w(p) = trade_off * (1/2 - cos(min(pi, 2 pi p)) / 2), zero at the start, full at
  half of training.

Mean Teacher (Tarvainen & Valpola, NeurIPS 2017; for adaptation: French, Mackiewicz & Fisher,
"Self-ensembling for visual domain adaptation", ICLR 2018): a teacher whose weights are an
exponential moving average of the student's, theta'_t = a_t theta'_{t-1} + (1 - a_t) theta_t
with a_t = min(ema, 1 - 1/(t + 1)) (a pure function of the step), and

    L = CE(h(x_s), y_s) + w(p) * mean_i m_i || softmax(h(x_st,i)) - softmax(h'(x_w,i)) ||^2

where h' is the teacher, m_i = 1[max softmax(h'(x_w,i)) >= threshold] (French et al.'s
confidence thresholding; threshold 0 keeps all), and w(p) = trade_off * exp(-5 (1 - p/r)^2)
for p < r (the sigmoid-shaped ramp-up of Laine & Aila 2017), trade_off after it.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from shiftray.methods.base import AdaptationMethod, StepOutput
from shiftray.methods.layers import frozen
from shiftray.methods.params import FixMatchParams, MeanTeacherParams  # torch-free


class FixMatch(AdaptationMethod):
    """FixMatch consistency: confident weak-view pseudo-labels train the strong view."""

    Params = FixMatchParams
    needs_strong = True

    def forward(self, model, batch, progress):
        n_s, n_t = len(batch.x_s), len(batch.x_t)
        logits, _ = model(torch.cat([batch.x_s, batch.x_t, batch.x_t_strong]))
        cls_loss = F.cross_entropy(logits[:n_s], batch.y_s)
        q = F.softmax(logits[n_s : n_s + n_t].detach().float(), dim=1)
        tau, weight = self.params.threshold, self.params.trade_off
        if self.params.adamatch:
            p_s = F.softmax(logits[:n_s].detach().float(), dim=1)
            q = q * (p_s.mean(0) / q.mean(0).clamp(min=1e-8))
            q = q / q.sum(1, keepdim=True)
            tau = tau * float(p_s.max(dim=1).values.mean())
            weight = weight * (0.5 - math.cos(min(math.pi, 2 * math.pi * progress)) / 2)
        conf, pseudo = q.max(dim=1)
        mask = (conf >= tau).float()
        unsup = (F.cross_entropy(logits[n_s + n_t :], pseudo, reduction="none") * mask).mean()
        return StepOutput(
            cls_loss + weight * unsup,
            {
                "cls_loss": cls_loss.detach(),
                "transfer_loss": unsup.detach(),
                "mask_rate": mask.mean(),
            },
        )


def rampup_weight(progress: float, length: float) -> float:
    if length <= 0 or progress >= length:
        return 1.0
    return math.exp(-5.0 * (1.0 - progress / length) ** 2)


class MeanTeacher(AdaptationMethod):
    """Self-ensembling: an EMA teacher's predictions on a weak view supervise the student."""

    Params = MeanTeacherParams
    needs_strong = True

    def setup(self, model):
        self.teacher = frozen(copy.deepcopy(model))

    def forward(self, model, batch, progress):
        n_s = len(batch.x_s)
        logits, _ = model(torch.cat([batch.x_s, batch.x_t_strong]))
        cls_loss = F.cross_entropy(logits[:n_s], batch.y_s)
        self.teacher.train(model.training)
        with torch.no_grad():
            t_prob = F.softmax(self.teacher(batch.x_t)[0], dim=1)
        s_prob = F.softmax(logits[n_s:], dim=1)
        mask = (t_prob.max(dim=1).values >= self.params.threshold).float()
        cons = (((s_prob - t_prob) ** 2).sum(dim=1) * mask).mean()
        w = self.params.trade_off * rampup_weight(progress, self.params.rampup)
        return StepOutput(
            cls_loss + w * cons,
            {
                "cls_loss": cls_loss.detach(),
                "transfer_loss": cons.detach(),
                "mask_rate": mask.mean(),
            },
        )

    @torch.no_grad()
    def after_step(self, model, step, progress):
        a = min(self.params.ema, 1.0 - 1.0 / (step + 1))
        for t, s in zip(self.teacher.parameters(), model.parameters(), strict=True):
            t.mul_(a).add_(s.detach(), alpha=1.0 - a)
        for t, s in zip(self.teacher.buffers(), model.buffers(), strict=True):
            t.copy_(s)
