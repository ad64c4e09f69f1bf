"""One served model: a checkpoint -> class probabilities and shift signals for a batch.

The model is built and loaded by `shiftray.models.load.load_trained_model`, the loader SHOT and
distillation use (safetensors only: loading runs no code), so preprocessing that lives in the
model (``data.normalize``, the backbone's input normalisation) is the training one. Beside the
classes, each input gets:

- ``shift_score``: its rank among the target training rows by class-conditional Mahalanobis
  distance (`shiftray.evaluate.shift`), from ``shift.safetensors`` saved with the checkpoint;
- ``target_probability``: for DANN / CDAN models, the trained domain discriminator's
  P(target | x) = sigmoid(-D(x)) (D's logit is "source"), from ``method.safetensors``.

LoRA models keep their adapters unmerged and share their frozen base with the other models of
that base in the process (`shiftray.serving.bases`); ``bases=None`` merges them instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shiftray.evaluate.shift import ShiftReference, load_reference
from shiftray.serving.bases import SHARED, SharedBases


@dataclass
class Outputs:
    probabilities: np.ndarray  # (N, K) float32
    index: np.ndarray  # (N,) int64
    shift_score: np.ndarray | None  # (N,) float32 in [0, 1]
    target_probability: np.ndarray | None  # (N,) float32
    features: torch.Tensor  # (N, D): what the drift window keeps

    def rows(self, start: int, stop: int) -> Outputs:
        cut = slice(start, stop)
        return Outputs(
            self.probabilities[cut], self.index[cut],
            None if self.shift_score is None else self.shift_score[cut],
            None if self.target_probability is None else self.target_probability[cut],
            self.features[cut],
        )  # fmt: skip


def _discriminator(ckpt: Path, spec, model) -> torch.nn.Module | None:
    """The method's trained domain discriminator (DANN, CDAN), or None."""
    from safetensors.torch import load_file

    from shiftray.methods.base import ModelInfo
    from shiftray.registry import METHODS

    cls = METHODS.get(spec.method.name)
    if not getattr(cls, "has_discriminator", False) or not (ckpt / "method.safetensors").is_file():
        return None
    method = cls(spec.method.resolved_params(), ModelInfo(model.feature_dim, model.num_classes))
    method.load_state_dict(load_file(ckpt / "method.safetensors"))
    return method.eval()


class Predictor:
    def __init__(self, path: str | Path, device: str = "cpu",
                 bases: SharedBases | None = SHARED) -> None:  # fmt: skip
        from shiftray.config.load import load_spec
        from shiftray.models.load import load_trained_model, resolve_checkpoint

        ckpt = resolve_checkpoint(path)
        self.device = torch.device(device)
        self.model, labels = load_trained_model(ckpt, self.device, merge=bases is None)
        self.shared_bytes = bases.share(self.model) if bases is not None else 0
        self.classes: list[str] = list(labels["classes"])
        self.method = _discriminator(ckpt, load_spec(ckpt / "spec.yaml"), self.model)
        if self.method is not None:
            self.method.to(self.device)
        self.reference: ShiftReference | None = load_reference(ckpt)

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> Outputs:
        logits, features = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        probs = torch.softmax(logits.float(), dim=1)
        shift = target = None
        if self.reference is not None:
            shift = self.reference.score(features.float().cpu()).numpy()
        if self.method is not None:
            target = torch.sigmoid(-self.method.domain_logit(logits, features)).float().cpu()
            target = target.numpy()
        return Outputs(probs.cpu().numpy(), probs.argmax(1).cpu().numpy(), shift, target,
                       features.float().cpu())  # fmt: skip
