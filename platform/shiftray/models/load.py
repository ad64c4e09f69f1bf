"""A trained run directory -> the model it trained, checked against what the caller expects.

Used wherever a trained model is the input: SHOT adapts a source model, distillation learns
from a teacher, serving answers with a model. Only ``model.safetensors`` (safetensors: loading
runs no code), ``spec.yaml`` and ``labels.json`` are read. `RunIdentity` says what a model was
trained on; `check_identity` refuses a model trained on other domains, other classes or another
backbone, naming both sides, instead of adapting from (or serving) the wrong model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from shiftray.errors import UserInputError

CKPT_RE = re.compile(r"^checkpoint_(\d{8})$")


@dataclass(frozen=True)
class RunIdentity:
    """What a model was trained on (from its spec.yaml and labels.json)."""

    benchmark: str
    source: str
    target: str
    classes: tuple[str, ...]
    backbone: str
    normalize: str = "none"  # data.normalize: its statistics travel inside the model

    def describe(self, fields: tuple[str, ...]) -> str:
        return ", ".join(f"{f}={getattr(self, f)!r}" for f in fields)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints (``checkpoint_<step:08d>``) in a run directory, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and CKPT_RE.match(p.name)]
    return sorted(found, key=lambda p: int(CKPT_RE.match(p.name).group(1)))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory -> the checkpoint of its final model: the
    step ``result.json`` names in ``model_step`` (early stopping restores the best step), else
    the latest."""
    path = Path(path).expanduser()
    if (path / "model.safetensors").is_file():
        return path
    result = path / "result.json"
    if result.is_file():
        step = json.loads(result.read_text()).get("model_step")
        if step is not None and (path / f"checkpoint_{int(step):08d}").is_dir():
            return path / f"checkpoint_{int(step):08d}"
    found = list_checkpoints(path)
    if not found:
        raise FileNotFoundError(
            f"{path} is neither a checkpoint (no model.safetensors) nor a run directory with "
            f"checkpoint_* inside; train one first with `shiftray run`"
        )
    return found[-1]


def run_identity(ckpt: Path) -> RunIdentity:
    import yaml

    spec = yaml.safe_load((ckpt / "spec.yaml").read_text())
    labels = json.loads((ckpt / "labels.json").read_text())
    data, model = spec.get("data", {}), spec.get("model", {})
    return RunIdentity(
        benchmark=data.get("benchmark", ""), source=data.get("source", ""),
        target=data.get("target", ""), classes=tuple(labels["classes"]),
        backbone=model.get("backbone", ""), normalize=data.get("normalize", "none"),
    )  # fmt: skip


def check_identity(
    ckpt: Path, expected: RunIdentity, fields: tuple[str, ...], what: str
) -> RunIdentity:
    """Refuse the checkpoint when any of ``fields`` differs from ``expected``."""
    found = run_identity(ckpt)
    bad = tuple(f for f in fields if getattr(found, f) != getattr(expected, f))
    if bad:
        raise UserInputError(
            f"{what} {ckpt} was trained with {found.describe(bad)}, but this job has "
            f"{expected.describe(bad)}; point {what} at a run trained for this job"
        )
    return found


def read_weights(ckpt: Path, device: str | torch.device = "cpu") -> tuple[dict, dict]:
    """model.safetensors' tensors and metadata (a LoRA checkpoint's base fingerprint)."""
    from safetensors import safe_open

    path = Path(ckpt) / "model.safetensors"
    with safe_open(path, framework="pt") as f:
        metadata = dict(f.metadata() or {})
    return load_file(path, device=str(device)), metadata


def load_trained_model(path: str | Path, device: str | torch.device = "cpu", merge: bool = True):
    """Build the AdaptModel a checkpoint was trained with and load its weights (for inference,
    teachers and serving). Returns the model in eval mode and its labels.json. A LoRA run's
    base is rebuilt from its ``model.pretrained`` (checked against the checkpoint's
    fingerprint); ``merge`` folds the adapters in (a plain model, the same predictions)."""
    from shiftray.config.load import load_spec
    from shiftray.models.build import job_model

    ckpt = resolve_checkpoint(path)
    spec = load_spec(ckpt / "spec.yaml")
    labels = json.loads((ckpt / "labels.json").read_text())
    model = job_model(spec, tuple(labels["input_shape"]), len(labels["classes"]),
                      labels.get("tasks"), pretrained=False)  # fmt: skip
    model.load_checkpoint_state(*read_weights(ckpt), where=str(ckpt))
    if merge:
        model = model.merged()
    return model.to(device).eval(), labels
