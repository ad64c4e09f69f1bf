"""One served model: a checkpoint -> a `Prediction` (class probabilities and shift signals).

The model is built and loaded by `shiftray.models.load.load_trained_model`, the loader SHOT and
distillation use (safetensors only: loading runs no code), so preprocessing that lives in the
model (``data.normalize``, the backbone's input normalisation) is the training one. Beside the
classes, each input gets:

- ``shift_score``: its rank among the target training rows by class-conditional Mahalanobis
  distance (`shiftray.evaluate.shift`), from ``shift.safetensors`` saved with the checkpoint;
- ``target_probability``: for DANN / CDAN models, the trained domain discriminator's
  P(target | x) = sigmoid(-D(x)) (D's logit is "source"), from ``method.safetensors``.

`Prediction` is the one object that travels from the model to every wire protocol
(`shiftray.serving.protocols`): the encoders write the fields `OUTPUTS` declares, in that order,
so a new output is a new entry there and a new field computed here, and nothing else changes.

LoRA models keep their adapters unmerged and share their frozen base with the other models of
that base in the process (`shiftray.serving.bases`); ``bases=None`` merges them instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from shiftray.evaluate.shift import ShiftReference, load_reference
from shiftray.serving.bases import SHARED, SharedBases


@dataclass(frozen=True)
class Output:
    """An output every protocol can carry: its name, Open Inference Protocol datatype, and
    whether it has one value per class (shape (N, K)) or per input (shape (N,))."""

    name: str
    datatype: str
    description: str
    per_class: bool = False


OUTPUTS: tuple[Output, ...] = (
    Output("label", "BYTES", "the predicted class name"),
    Output("index", "INT64", "the predicted class index, in `labels` order"),
    Output("probabilities", "FP32", "class probabilities, in `labels` order", per_class=True),
    Output(
        "shift_score",
        "FP32",
        "0..1: share of target training inputs more target-like than "
        "this one (~0.5 on the target domain, -> 1 off it)",
    ),  # fmt: skip
    Output("target_probability", "FP32", "P(target) by the DANN/CDAN domain discriminator"),
)


class NonFiniteOutput(ValueError):
    """The model answered NaN or infinity for some inputs (their indices in ``rows``)."""

    def __init__(self, rows: list[int]) -> None:
        super().__init__(f"the model's output is not finite for instance(s) {rows[:10]}")
        self.rows = rows


@dataclass(frozen=True)
class Prediction:
    """One model's answer for N inputs."""

    model: str
    classes: tuple[str, ...]
    probabilities: np.ndarray  # (N, K) float32
    index: np.ndarray  # (N,) int64
    shift_score: np.ndarray | None = None  # (N,) float32 in [0, 1]
    target_probability: np.ndarray | None = None  # (N,) float32
    features: torch.Tensor | None = field(default=None, repr=False)  # (N, D): the drift window's
    batch_rows: int = 0  # rows in the forward pass that answered (several requests batched)
    replica: str = ""

    def __len__(self) -> int:
        return len(self.index)

    @property
    def label(self) -> np.ndarray:
        return np.asarray(self.classes, dtype=object)[self.index]

    def tensor(self, name: str) -> np.ndarray | None:
        """An output of `OUTPUTS` by name (None when this model has no such signal)."""
        return getattr(self, name)

    def tensors(self, names: list[str] | None = None) -> list[tuple[Output, np.ndarray]]:
        """The outputs named (default: all) that this model has, in `OUTPUTS` order."""
        wanted = [o for o in OUTPUTS if names is None or o.name in names]
        return [(o, t) for o in wanted if (t := self.tensor(o.name)) is not None]

    def _per_input(self) -> list[str]:
        """The fields with one row per input: every output that is a field, and the features."""
        return [o.name for o in OUTPUTS if o.name in self.__dataclass_fields__] + ["features"]

    def take(self, rows: slice | np.ndarray) -> Prediction:
        """The answers for some inputs: a slice, or an array of row indices."""
        return replace(self, **{n: None if (a := getattr(self, n)) is None else a[rows]
                                for n in self._per_input()})  # fmt: skip

    @classmethod
    def concat(cls, parts: list[Prediction]) -> Prediction:
        """The answers of several batches of one model, in order."""

        def cat(name: str):
            got = [getattr(p, name) for p in parts]
            if got[0] is None:
                return None
            return torch.cat(got) if isinstance(got[0], torch.Tensor) else np.concatenate(got)

        return replace(parts[0], **{n: cat(n) for n in parts[0]._per_input()},
                       batch_rows=sum(p.batch_rows for p in parts))  # fmt: skip

    def rows(self, start: int, stop: int) -> Prediction:
        return self.take(slice(start, stop))

    def check_finite(self) -> None:
        """Raise `NonFiniteOutput` naming the inputs whose outputs are NaN or infinite."""
        bad = ~np.isfinite(self.probabilities).all(1)
        for signal in (self.shift_score, self.target_probability):
            if signal is not None:
                bad |= ~np.isfinite(signal)
        if bad.any():
            raise NonFiniteOutput(np.flatnonzero(bad).tolist())


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
    """A loaded checkpoint, called on a batch of inputs: ``Predictor(run_dir)(x) -> Prediction``."""

    def __init__(self, path: str | Path, device: str = "cpu",
                 bases: SharedBases | None = SHARED, name: str = "") -> None:  # fmt: skip
        from shiftray.config.load import load_spec
        from shiftray.models.load import load_trained_model, resolve_checkpoint

        ckpt = resolve_checkpoint(path)
        self.name = name or Path(path).name
        self.device = torch.device(device)
        self.model, labels = load_trained_model(ckpt, self.device, merge=bases is None)
        self.shared_bytes = bases.share(self.model) if bases is not None else 0
        self.classes: tuple[str, ...] = tuple(labels["classes"])
        self.method = _discriminator(ckpt, load_spec(ckpt / "spec.yaml"), self.model)
        if self.method is not None:
            self.method.to(self.device)
        self.reference: ShiftReference | None = load_reference(ckpt)

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> Prediction:
        logits, features = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        probs = torch.softmax(logits.float(), dim=1)
        shift = target = None
        if self.reference is not None:
            shift = self.reference.score(features.float().cpu()).numpy()
        if self.method is not None:
            target = torch.sigmoid(-self.method.domain_logit(logits, features)).float().cpu()
            target = target.numpy()
        return Prediction(self.name, self.classes, probs.cpu().numpy(),
                          probs.argmax(1).cpu().numpy(), shift, target,
                          features.float().cpu(), batch_rows=len(x))  # fmt: skip
