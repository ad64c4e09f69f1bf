"""TrainModule: model + method as one nn.Module, so one DDP wrap covers every trained part.

An optional regularizer (L2-SP) is added to the method's loss here, so methods stay unaware.
"""

from __future__ import annotations

from torch import nn

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

    def forward(self, batch: DABatch, progress: float) -> StepOutput:
        out = self.method(self.model, batch, progress)
        if self.regularizer is not None:
            reg = self.regularizer()
            out.loss = out.loss + reg
            out.logs["reg_loss"] = reg.detach()
        return out
