"""The method contract: a method is an nn.Module that turns a batch into a loss.

``forward(model, batch, progress) -> StepOutput``. It owns its extra modules (discriminators,
teachers) so that one DDP wrap and one checkpoint cover them; it never steps an optimizer.
Every schedule it uses is a pure function of ``progress`` = step / total_steps in [0, 1] (or
of the step itself), so a resumed run computes the same values as an uninterrupted one.

Optional hooks, all no-ops here:

- ``setup(model)``: once, after the model is built (copy a teacher, load source weights);
- ``after_step(model, step, progress)``: after each optimizer step (EMA teachers);
- ``refresh(model, target, device)``: every ``refresh_every`` steps, with the whole unlabelled
  target set (global pseudo-labels, as in SHOT);
- ``lr_scales()``: per-role learning-rate multipliers ({"head": 0.0} freezes the classifier).

Flags: ``uses_source`` (False = source-free: source data is never read), ``needs_strong``
(the batch carries a strongly augmented target view).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from shiftray.data.arrays import UnlabelledArrays
from shiftray.data.batches.base import DABatch
from shiftray.models.load import RunIdentity


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class ModelInfo:
    feature_dim: int
    num_classes: int
    num_target: int = 0  # size of the unlabelled target set (for per-example state)
    job: RunIdentity | None = None  # what this job trains on: runs it loads are checked against it


@dataclass
class StepOutput:
    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class AdaptationMethod(nn.Module):
    Params: type[BaseModel] = NoParams
    uses_source: bool = True
    needs_strong: bool = False
    refresh_every: int = 0
    needs_whole_target: bool = False  # per-example state over the target set (in-memory data)
    accepts_lora: bool = True  # trains with finetune.lora adapters (SHOT starts from a whole model)
    needs_raw_inputs: bool = False  # batches hold raw inputs (a teacher reads them): no caching

    def __init__(self, params: BaseModel, info: ModelInfo) -> None:
        super().__init__()
        self.params = params
        self.info = info

    def setup(self, model: nn.Module) -> None:
        pass

    def forward(self, model: nn.Module, batch: DABatch, progress: float) -> StepOutput:
        raise NotImplementedError

    def after_step(self, model: nn.Module, step: int, progress: float) -> None:
        pass

    def refresh(self, model: nn.Module, target: UnlabelledArrays, device: torch.device) -> None:
        pass

    def lr_scales(self) -> dict[str, float]:
        return {}

    has_discriminator: bool = False  # domain_logit is defined (serving's shift signal)

    def domain_logit(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Logit that inputs with these (logits, features) come from the *source* domain, by
        the method's trained domain discriminator (DANN, CDAN); only when has_discriminator."""
        raise NotImplementedError(f"{type(self).__name__} has no domain discriminator")
