"""One optimisation step (no Ray here): forward under autocast, backward, clip, step.

``grad_accum`` > 1 splits the batch into micro-batches whose gradients add up before the
step (under DDP only the last one all-reduces). Each micro-batch's loss is divided by the
count, so the update equals one step on the whole batch for per-example-mean losses in a model
without BatchNorm. Batch statistics are per micro-batch, as in any accumulation: BatchNorm
(the default bottleneck and discriminator) normalises each micro-batch by its own statistics and
updates its running ones once per micro-batch, and batch-level losses (MCC, the diversity term
of SHOT/IM) see micro-batches. Accumulation trades that for memory; prefer more workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from shiftray.config.schema import JobSpec
from shiftray.data.batches.base import DABatch
from shiftray.methods.base import StepOutput


@dataclass(frozen=True)
class StepConfig:
    autocast_dtype: torch.dtype | None = None  # None = fp32
    device_type: str = "cpu"
    channels_last: bool = False
    grad_clip: float | None = None
    grad_accum: int = 1

    @classmethod
    def from_spec(cls, spec: JobSpec, device: torch.device, image_model: bool) -> StepConfig:
        tr, cuda = spec.train, device.type == "cuda"
        bf16 = tr.precision == "bf16" or (
            tr.precision == "auto" and cuda and torch.cuda.is_bf16_supported()
        )
        cl = tr.channels_last == "on" or (tr.channels_last == "auto" and _nhwc_wins(spec, cuda))
        return cls(
            autocast_dtype=torch.bfloat16 if bf16 else None,
            device_type=device.type,
            channels_last=cl and image_model,
            grad_clip=spec.optim.grad_clip,
            grad_accum=tr.grad_accum,
        )


def _nhwc_wins(spec: JobSpec, cuda: bool) -> bool:
    """``channels_last: auto``: NHWC on GPUs (tensor-core convolutions want it); on CPU only for
    backbones that say so (``nhwc_on_cpu``: shiftray's LeNet, where `bench/memory_format.py`
    measured a step x1.64 (28 px) and x1.59 (32 px RGB) faster, while timm's resnet18 at 64 px
    ran x0.84, slower, in NHWC)."""
    from shiftray.registry import BACKBONES, family_of

    name = spec.model.backbone
    return cuda or (family_of(name) is None and getattr(BACKBONES.get(name), "nhwc_on_cpu", False))


def compile_network(model: nn.Module) -> nn.Module:
    """``torch.compile`` the network (backbone, bottleneck, head) in place: its state_dict keys
    stay as they are, and DDP wraps the module around it as before.

    Not the whole training module: the methods' losses take the training progress as a Python
    float (GRL and consistency ramps), which Dynamo specialises on, so a compiled method would
    recompile at every step until ``recompile_limit`` (8) and then run eager. The network sees
    tensors only: one graph for training (a second for evaluation). The losses, discriminators
    and teachers (small next to the backbone, or a second backbone for Mean Teacher) run eager.
    """
    model.compile()
    return model


def _micro_batches(batch: DABatch, n: int) -> list[DABatch]:
    if n == 1:
        return [batch]
    parts = []
    for i in range(n):

        def cut(t, i=i):
            return None if t is None else t.chunk(n)[i]

        parts.append(DABatch(*(cut(getattr(batch, f.name)) for f in dataclasses.fields(batch))))
    return parts


def train_step(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: DABatch,
    progress: float,
    cfg: StepConfig = StepConfig(),
    step: int = 0,
) -> StepOutput:
    module.train()
    optimizer.zero_grad(set_to_none=True)
    micro = _micro_batches(batch, cfg.grad_accum)
    loss_sum, logs = 0.0, {}
    for i, mb in enumerate(micro):
        last = i == len(micro) - 1
        sync = (
            contextlib.nullcontext() if last or not hasattr(module, "no_sync") else module.no_sync()
        )
        amp = (
            torch.autocast(cfg.device_type, dtype=cfg.autocast_dtype)
            if cfg.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with sync:
            with amp:
                out: StepOutput = module(mb, progress)
            (out.loss / len(micro)).backward()
        loss_sum = loss_sum + out.loss.detach() / len(micro)
        for k, v in out.logs.items():
            logs[k] = logs.get(k, 0.0) + v.detach().float() / len(micro)
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
    optimizer.step()
    inner = getattr(module, "module", module)  # under DDP
    inner.method.after_step(inner.model, step, progress)
    return StepOutput(loss_sum, logs)
