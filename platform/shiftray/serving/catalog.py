"""Named models: which run directories an application serves, and whether each can be served.

Names are fixed when the application starts (name -> run directory, or every sub-directory of
a models root); a request names a model and is looked up in that table, never joined to a
path. `inspect_model` checks a run directory without loading its weights: the final checkpoint,
its spec and labels, and that ``model.safetensors`` holds exactly the tensors (names and shapes)
of the model the spec builds (built on the meta device: no memory). A model that fails is
listed as not ready, with the reason; the others are served.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shiftray.serving.inputs import InputSpec

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class ModelCard:
    """What ``GET /v1/models/{name}`` says about a model."""

    name: str
    path: str  # the run directory (the server's; not shown to clients)
    ready: bool = False
    reason: str = ""
    checkpoint: str = ""
    classes: list[str] = field(default_factory=list)
    input: InputSpec | None = None
    training: dict[str, Any] = field(default_factory=dict)
    shift_signal: list[str] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "ready": self.ready}
        if not self.ready:
            return out | {"reason": self.reason}
        return out | {
            "labels": self.classes,
            "input": self.input.describe() if self.input else None,
            "training": self.training,
            "shift_signal": self.shift_signal,
        }


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(
            f"model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


def root_models(root: str | Path) -> dict[str, str]:
    """Every sub-directory of a models root whose name is a valid model name."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"models_root {root} is not a directory")
    return {p.name: str(p) for p in sorted(root.iterdir()) if p.is_dir() and NAME_RE.match(p.name)}


def _summary(run_dir: Path, ckpt: Path, spec) -> dict[str, Any]:
    result_file = run_dir / "result.json"
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    keep = ("step", "model_step", "target_acc", "health", "stopped_early", "best_step")
    return {
        "job": spec.name, "benchmark": spec.data.benchmark, "source": spec.data.source,
        "target": spec.data.target, "method": spec.method.name, "backbone": spec.model.backbone,
        "normalize": spec.data.normalize, "checkpoint": ckpt.name,
        **{k: result[k] for k in keep if k in result},
    }  # fmt: skip


def _check_weights(ckpt: Path, spec, labels: dict) -> dict[str, str]:
    """model.safetensors must hold the tensors of the model the spec builds, no more or less.
    Returns its metadata (a LoRA checkpoint names its base: ``lora_base_sha256``)."""
    import torch
    from safetensors import safe_open

    from shiftray.models.build import build_model

    tasks = {n: len(c) for n, c in labels.get("tasks", {}).items()} or None
    with torch.device("meta"):
        model = build_model(spec.model.model_copy(update={"pretrained": False}),
                            tuple(labels["input_shape"]), len(labels["classes"]),
                            spec.data.normalize, spec.finetune.lora, tasks,
                            spec.task_weighting == "uncertainty")  # fmt: skip
    want = {k: tuple(v.shape) for k, v in model.checkpoint_state().items()}
    with safe_open(ckpt / "model.safetensors", framework="pt") as f:
        have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        metadata = dict(f.metadata() or {})
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or extra or wrong:
        raise ValueError(
            f"model.safetensors does not match the model spec.yaml builds: missing "
            f"{missing[:3]}, unexpected {extra[:3]}, other shapes {wrong[:3]}"
        )
    return metadata


def inspect_model(name: str, path: str | Path) -> ModelCard:
    """A card for the run directory (or checkpoint) at ``path``; not ready, with the reason,
    when anything is missing or unreadable."""
    from shiftray.config.load import load_spec
    from shiftray.evaluate.shift import FILE as SHIFT_FILE
    from shiftray.models.load import resolve_checkpoint

    card = ModelCard(name, str(path))
    try:
        ckpt = resolve_checkpoint(path)
        for f in ("model.safetensors", "spec.yaml", "labels.json"):
            if not (ckpt / f).is_file():
                raise FileNotFoundError(f"{ckpt / f} is missing")
        spec = load_spec(ckpt / "spec.yaml")
        labels = json.loads((ckpt / "labels.json").read_text())
        metadata = _check_weights(ckpt, spec, labels)
        card.input = InputSpec.from_checkpoint(labels, spec)
    except Exception as e:  # any failure: this model is not served, the others are
        card.reason = f"{type(e).__name__}: {e}"
        return card
    from shiftray.registry import METHODS

    signals = ["mahalanobis"] if (ckpt / SHIFT_FILE).is_file() else []
    if getattr(METHODS.get(spec.method.name), "has_discriminator", False):
        signals.append("discriminator")
    run_dir = ckpt.parent if ckpt.parent.joinpath("spec.yaml").is_file() else ckpt
    card.ready, card.checkpoint, card.classes = True, str(ckpt), list(labels["classes"])
    card.training, card.shift_signal = _summary(run_dir, ckpt, spec), signals
    if "lora_base_sha256" in metadata:  # adapters of one base share it on a replica
        card.training["lora_base_sha256"] = metadata["lora_base_sha256"]
    return card
