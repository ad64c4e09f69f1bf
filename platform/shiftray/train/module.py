"""TrainModule: model + method as one nn.Module, so one DDP wrap covers every trained part.

An optional regularizer (L2-SP) is added to the method's loss here, so methods stay unaware.
So is semi-supervised DA's labelled-target term: with ``k`` labelled target rows per class
(``data.target_labels_per_class``), every batch carries a labelled-target batch and

    L = L_method + w(p) * CE(f(x_l), y_l),    w(p) = start + (end - start) p

(``data.target_label_weight``), whatever the method: S+T training under ERM, and MME-style
semi-supervised adaptation under DANN, CDAN, FixMatch, ... (Saito et al., ICCV 2019, use the
same protocol: 1 and 3 labelled target examples per class).

The labelled batch has its own forward pass, and BatchNorm's running statistics leave it out
(`_labelled_logits`): it is drawn with replacement from only k x classes rows, so its
statistics describe those few rows, not a domain, yet a forward pass in training mode would
weigh them like a whole batch of either domain in the statistics evaluation normalises with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from shiftray.data.batches.base import DABatch
from shiftray.methods.base import AdaptationMethod, StepOutput
from shiftray.models.build import AdaptModel


class TrainModule(nn.Module):
    def __init__(self, model: AdaptModel, method: AdaptationMethod, regularizer=None) -> None:
        super().__init__()
        self.model = model
        self.method = method
        method.setup(model)
        self.regularizer = regularizer  # a plain attribute: its snapshot is not checkpointed
        self.target_label_weight = None  # a LabelWeight when the data has labelled target rows
        self.tasks = ()  # multi-task: the extra tasks' TaskSpecs, in batch.y_aux's column order

    def forward(self, batch: DABatch, progress: float) -> StepOutput:
        out = self.method(self.model, batch, progress)
        if batch.x_l is not None and self.target_label_weight is not None:
            ce = F.cross_entropy(self._labelled_logits(batch.x_l), batch.y_l)
            out.loss = out.loss + self.target_label_weight.at(progress) * ce
            out.logs["target_label_loss"] = ce.detach()
        if batch.y_aux is not None and self.tasks:
            out.loss = out.loss + self._task_losses(batch, out.logs)
        if self.regularizer is not None:
            reg = self.regularizer()
            out.loss = out.loss + reg
            out.logs["reg_loss"] = reg.detach()
        return out

    def _labelled_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The labelled target rows' logits; BatchNorm normalises them by their batch as usual,
        but with momentum 0 for this pass its running statistics stay as they were."""
        norms = [m for m in self.model.modules()
                 if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]  # fmt: skip
        kept = [m.momentum for m in norms]
        for m in norms:
            m.momentum = 0.0  # running <- (1 - 0) running + 0 batch
        try:
            return self.model(x)[0]
        finally:
            for m, momentum in zip(norms, kept, strict=True):
                m.momentum = momentum

    def _task_losses(self, batch: DABatch, logs: dict):
        """Extra tasks on the source rows' shared features: sum_t w_t CE_t (fixed), or
        sum_t exp(-s_t) CE_t + s_t / 2 with learned s_t = log sigma_t^2 (Kendall et al., CVPR
        2018: a task whose loss stays noisy is weighted down, and s_t / 2 stops sigma growing)."""
        features = self.model(batch.x_s)[1]
        log_vars = self.model.task_log_vars
        total = 0.0
        for i, task in enumerate(self.tasks):
            y = batch.y_aux[:, i]
            logits = self.model.task_heads[task.name](features)
            # mean over the labelled rows; a batch without any gives 0 and still touches every
            # head (and s_t), so DDP sees the same parameters used on every rank and step
            per_row = F.cross_entropy(logits, y.clamp_min(0), reduction="none",
                                      label_smoothing=task.label_smoothing)  # fmt: skip
            valid = (y >= 0).to(per_row.dtype)
            ce = (per_row * valid).sum() / valid.sum().clamp_min(1.0)
            logs[f"task/{task.name}/loss"] = ce.detach()
            total = total + (torch.exp(-log_vars[i]) * ce + log_vars[i] / 2 if log_vars is not None
                             else task.weight * ce)  # fmt: skip
        return total
