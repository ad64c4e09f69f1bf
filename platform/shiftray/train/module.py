"""TrainModule: model + method as one nn.Module, so one DDP wrap covers every trained part."""

from __future__ import annotations

from torch import nn

from shiftray.data.pairing import DABatch
from shiftray.methods.base import AdaptationMethod, StepOutput
from shiftray.models.build import AdaptModel


class TrainModule(nn.Module):
    def __init__(self, model: AdaptModel, method: AdaptationMethod) -> None:
        super().__init__()
        self.model = model
        self.method = method
        method.setup(model)

    def forward(self, batch: DABatch, progress: float) -> StepOutput:
        return self.method(self.model, batch, progress)
