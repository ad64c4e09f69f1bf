"""The method contract: a method is an nn.Module that turns a batch into a loss.

``forward(model, batch, progress) -> StepOutput``. It owns its extra modules (discriminators,
teachers) so that one DDP wrap and one checkpoint cover them; it never steps an optimizer.
Every schedule it uses is a pure function of ``progress`` = step / total_steps in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from shiftray.data.pairing import DABatch


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class ModelInfo:
    feature_dim: int
    num_classes: int


@dataclass
class StepOutput:
    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class AdaptationMethod(nn.Module):
    Params: type[BaseModel] = NoParams

    def __init__(self, params: BaseModel, info: ModelInfo) -> None:
        super().__init__()
        self.params = params
        self.info = info

    def forward(self, model: nn.Module, batch: DABatch, progress: float) -> StepOutput:
        raise NotImplementedError
