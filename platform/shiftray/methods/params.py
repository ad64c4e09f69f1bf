"""The built-in methods' hyper-parameters: pydantic models only, no torch.

Validating a job spec checks ``method.params`` against the method's Params. The method modules
import torch (about 2 s), so their Params live here and the registry reaches them through its
lazy params entries (`shiftray.registry.BUILTIN_PARAMS`): ``shiftray validate`` never imports
torch. Each method module re-exports its Params under the same name (``from
shiftray.methods.dann import DANNParams`` works, and ``DANN.Params is DANNParams``).

What validation must know of a method besides its parameters is a class variable here too:
``needs_whole_target`` (per-example state over the whole target set, so the target cannot be
streamed), ``uses_source``, ``accepts_lora``. The method class reads it from its Params, so it is declared once.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class MethodParams(BaseModel):
    """Base of the built-in Params: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    needs_whole_target: ClassVar[bool] = False
    uses_source: ClassVar[bool] = True
    accepts_lora: ClassVar[bool] = True  # False: it starts from a whole trained model


class ERMParams(MethodParams):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="0.1 for SHOT's source model")


class DANNParams(MethodParams):
    trade_off: float = Field(1.0, ge=0.0, description="weight of the domain loss")
    disc_hidden: list[int] = Field([1024, 1024], description="discriminator hidden sizes")
    disc_batch_norm: bool = True
    disc_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    grl_alpha: float = Field(10.0, ge=0.0, description="steepness of the GRL ramp")
    grl_max: float = Field(1.0, ge=0.0, description="final GRL coefficient")


class CDANParams(MethodParams):
    trade_off: float = Field(1.0, ge=0.0)
    entropy: bool = Field(False, description="CDAN+E: entropy conditioning of example weights")
    randomized: bool | None = Field(None, description="None: randomize when d_f*C > max_dim")
    randomized_dim: int = Field(1024, gt=0)
    max_dim: int = Field(4096, gt=0)
    disc_hidden: list[int] = Field([1024, 1024])
    disc_batch_norm: bool = True
    grl_alpha: float = Field(10.0, ge=0.0)
    grl_max: float = Field(1.0, ge=0.0)


class MCCParams(MethodParams):
    trade_off: float = Field(1.0, ge=0.0)
    temperature: float = Field(2.5, gt=0.0)


class SelfTrainingParams(MethodParams):
    trade_off: float = Field(1.0, ge=0.0)
    threshold_start: float = Field(0.95, ge=0.0, le=1.0)
    threshold_end: float = Field(0.8, ge=0.0, le=1.0)
    class_balanced: bool = True
    keep_start: float = Field(
        0.5, gt=0.0, le=1.0, description="CBST: fraction kept per class at p=0"
    )
    start: float = Field(0.1, ge=0.0, lt=1.0, description="progress before pseudo-labels are used")


class FixMatchParams(MethodParams):
    trade_off: float = Field(1.0, ge=0.0)
    threshold: float = Field(0.95, ge=0.0, le=1.0)
    adamatch: bool = Field(
        True, description="distribution alignment, relative threshold and ramp-up (AdaMatch)"
    )


class MeanTeacherParams(MethodParams):
    trade_off: float = Field(3.0, ge=0.0, description="consistency weight after the ramp-up")
    ema: float = Field(0.99, ge=0.0, lt=1.0)
    rampup: float = Field(0.1, ge=0.0, le=1.0, description="fraction of training to ramp up")
    threshold: float = Field(0.0, ge=0.0, le=1.0, description="teacher confidence mask")


class SHOTParams(MethodParams):
    needs_whole_target: ClassVar[bool] = True  # global pseudo-labels indexed by target example
    uses_source: ClassVar[bool] = False  # source-free: the source is never read
    accepts_lora: ClassVar[bool] = False  # it adapts a whole source model, not new adapters

    source_checkpoint: str | None = Field(None, description="source-trained run or checkpoint dir")
    beta: float = Field(0.3, ge=0.0, description="pseudo-label loss weight")
    im_weight: float = Field(1.0, ge=0.0, description="information-maximisation weight")
    refresh_every: int = Field(100, gt=0, description="steps between pseudo-label refreshes")
    eval_batch_size: int = Field(1000, gt=0)


class DistillParams(MethodParams):
    teacher: str = Field(
        ...,
        description="teacher run or checkpoint directory, or zeroshot:<CLIP hub name or folder> "
        "(CLIP zero-shot on the job's class names)",
    )
    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of the soft (teacher) term")
    inputs: Literal["target", "both"] = "both"
