"""build_model(spec) -> AdaptModel: the one constructor shared by training and serving."""

from __future__ import annotations

import torch
from torch import nn

from shiftray.config.schema import LoraSpec, ModelSpec
from shiftray.errors import UserInputError
from shiftray.finetune.lora import (
    adapter_groups,
    add_lora,
    base_fingerprint,
    is_adapter,
    merged_state,
)
from shiftray.layout import as_format
from shiftray.models.backbones import build_backbone
from shiftray.models.heads import bottleneck, classifier


class AdaptModel(nn.Module):
    """normalise -> backbone -> bottleneck -> classifier; forward returns (logits, features).

    ``features`` are the bottleneck outputs: what discriminators and alignment losses see.
    Inputs are raw (images in [0, 1], vectors as the reader gives them): ``normalize`` (the
    job's ``data.normalize``, `shiftray.data.normalize`) and the backbone's own input
    normalisation are applied here, so a checkpoint carries them to evaluation and serving.
    """

    def __init__(
        self, spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int,
        normalize: str = "none", lora: LoraSpec | None = None,
        tasks: dict[str, int] | None = None, task_uncertainty: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.spec, self.lora = spec, lora
        self.normalize = normalize
        if normalize == "zscore":  # fitted on the training data (set_normalization), saved
            self.register_buffer("norm_mean", torch.zeros(input_shape))
            self.register_buffer("norm_std", torch.ones(input_shape))
        bb = build_backbone(spec.backbone, input_shape, spec.pretrained, spec.backbone_kwargs)
        self.backbone = bb.module
        self.layer_groups = bb.layer_groups
        if lora is not None:  # the base freezes; its groups now hold the adapters only
            add_lora(self.backbone, lora.rank, lora.alpha, lora.dropout, lora.target_modules)
            self.layer_groups = adapter_groups(bb.layer_groups, self.backbone)
        self.frozen_backbone = False  # feature extraction: backbone in eval mode, no gradients
        self.cached = False  # inputs are already backbone features (cached feature extraction)
        self.channels_last = False  # image inputs reach the backbone in NHWC (set with the weights)
        if bb.mean is not None:
            shape = (1, -1) + (1,) * (len(input_shape) - 1)
            self.register_buffer("input_mean", torch.tensor(bb.mean).view(shape), persistent=False)
            self.register_buffer("input_std", torch.tensor(bb.std).view(shape), persistent=False)
        else:
            self.input_mean = self.input_std = None
        if spec.bottleneck_dim:
            self.bottleneck = bottleneck(bb.out_dim, spec.bottleneck_dim, spec.bottleneck_dropout)
            self.feature_dim = spec.bottleneck_dim
        else:
            self.bottleneck = nn.Identity()
            self.feature_dim = bb.out_dim
        self.head = classifier(self.feature_dim, num_classes, spec.head_dropout)
        # multi-task: one head per extra task on the shared features (the primary is ``head``)
        self.task_heads = nn.ModuleDict(
            {n: classifier(self.feature_dim, k, spec.head_dropout) for n, k in (tasks or {}).items()}
        )
        if task_uncertainty and tasks:  # s_t = log sigma_t^2 (Kendall et al. 2018), learned
            self.task_log_vars = nn.Parameter(torch.zeros(len(tasks)))
        else:
            self.task_log_vars = None
        self.tasks, self.task_uncertainty = dict(tasks or {}), task_uncertainty
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)

    def set_normalization(self, norm) -> None:
        """Copy a fitted `shiftray.data.normalize.Normalization` into the model."""
        if norm.kind != self.normalize:
            raise ValueError(
                f"normalization {norm.kind!r} for a model built for {self.normalize!r}"
            )
        if norm.kind == "zscore":
            self.norm_mean.copy_(torch.from_numpy(norm.mean).view_as(self.norm_mean))
            self.norm_std.copy_(torch.from_numpy(norm.std).view_as(self.norm_std))

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize == "zscore":
            return (x - self.norm_mean) / self.norm_std
        if self.normalize in ("l1", "l2"):
            p = 1 if self.normalize == "l1" else 2
            norms = x.flatten(1).norm(p=p, dim=1).clamp_min(1e-12)
            return x / norms.view(-1, *([1] * (x.dim() - 1)))
        if self.normalize == "log1p":
            return torch.log1p(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of raw inputs (what cached feature extraction stores)."""
        x = self._normalize(x)
        if self.input_mean is not None:
            x = (x - self.input_mean) / self.input_std
        x = as_format(x, self.channels_last)  # every caller: training, evaluation, validators
        if self.frozen_backbone:
            self.backbone.eval()
            with torch.no_grad():
                return self.backbone(x)
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.bottleneck(x if self.cached else self.features(x))
        return self.head(features), features

    def freeze_backbone(self) -> None:
        """Feature extraction: call before any DDP wrap (DDP fixes its parameters once)."""
        self.frozen_backbone = True
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role, for per-group learning rates: backbone layer groups from the
        input up (``backbone.0`` is the stem), then the new bottleneck and head."""
        named = {n: p for n, p in self.backbone.named_parameters()
                 if self.lora is None or is_adapter(n)}  # fmt: skip
        groups: dict[str, list[nn.Parameter]] = {}
        seen: set[str] = set()
        for i, names in enumerate(self.layer_groups):
            groups[f"backbone.{i}"] = [named[n] for n in names]
            seen.update(names)
        rest = [p for n, p in named.items() if n not in seen]
        if rest:  # parameters no group claims join the top group
            key = f"backbone.{max(len(self.layer_groups) - 1, 0)}"
            groups[key] = groups.get(key, []) + rest
        groups["bottleneck"] = list(self.bottleneck.parameters())
        groups["head"] = list(self.head.parameters()) + list(self.task_heads.parameters())
        if self.task_log_vars is not None:
            groups["head"].append(self.task_log_vars)
        return groups

    # --- checkpoints: with LoRA they hold the adapters and new layers, not the frozen base ---

    def _base_keys(self) -> set[str]:
        if self.lora is None:
            return set()
        # the frozen base *parameters*; buffers (BatchNorm statistics) still move and are saved
        return {f"backbone.{k}" for k, _ in self.backbone.named_parameters() if not is_adapter(k)}

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """What model.safetensors holds: the whole state, less a LoRA model's frozen base."""
        base = self._base_keys()
        return {k: v for k, v in self.state_dict().items() if k not in base}

    def checkpoint_metadata(self) -> dict[str, str]:
        """model.safetensors' metadata: a LoRA model names its base by fingerprint."""
        if self.lora is None:
            return {}
        if getattr(self, "_base_sha", None) is None:  # the base is frozen: hash it once
            self._base_sha = base_fingerprint(self.backbone)
        return {"lora_base_sha256": self._base_sha}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], metadata: dict | None = None,
                              where: str = "checkpoint") -> None:  # fmt: skip
        """Load `checkpoint_state`'s tensors. A LoRA model's base comes from ``model.pretrained``
        (built already); a checkpoint whose base fingerprint differs is refused."""
        if self.lora is None:
            self.load_state_dict(state)
            return
        want = (metadata or {}).get("lora_base_sha256")
        have = self.checkpoint_metadata()["lora_base_sha256"]
        if want is not None and want != have:
            raise UserInputError(
                f"{where}: its LoRA adapters were trained on other base weights than "
                f"model.backbone={self.spec.backbone!r} with model.pretrained={self.spec.pretrained!r} "
                f"gives here (sha256 {want[:12]} vs {have[:12]}); point them at the weights it was "
                "trained from"
            )
        missing, unexpected = self.load_state_dict(state, strict=False)
        bad = sorted(set(missing) - self._base_keys()) + sorted(unexpected)
        if bad:
            raise ValueError(f"{where}: tensors missing or unexpected: {bad[:5]}")

    def merged(self) -> AdaptModel:
        """A plain model (no peft) with each LoRA update folded into its base weight; the same
        predictions (`shiftray.finetune.lora.merged_state`). Without LoRA: self."""
        if self.lora is None:
            return self
        plain = AdaptModel(self.spec.model_copy(update={"pretrained": False}), self.input_shape,
                           self.num_classes, self.normalize, None, self.tasks,
                           self.task_uncertainty)  # fmt: skip
        own = self.state_dict()
        state = {k: v for k, v in own.items() if not k.startswith("backbone.")}
        state |= {f"backbone.{k}": v for k, v in merged_state(self.backbone).items()}
        plain.load_state_dict(state)
        plain.channels_last, plain.cached = self.channels_last, self.cached
        return plain.to(next(self.parameters()).device).train(self.training)


def build_model(
    spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, normalize: str = "none",
    lora: LoraSpec | None = None, tasks: dict[str, int] | None = None,
    task_uncertainty: bool = False,
) -> AdaptModel:  # fmt: skip
    return AdaptModel(spec, tuple(input_shape), num_classes, normalize, lora, tasks, task_uncertainty)


class TaskView(nn.Module):
    """One extra task of a multi-task model, seen as a classifier (for evaluation)."""

    def __init__(self, model: AdaptModel, name: str) -> None:
        super().__init__()
        self.model, self.name = model, name
        self.num_classes = model.tasks[name]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model(x)[1]
        return self.model.task_heads[self.name](features), features


def job_model(spec, input_shape, num_classes: int, task_classes: dict | None = None,
              pretrained: bool = True) -> AdaptModel:  # fmt: skip
    """The model a job spec builds (``pretrained=False``: the architecture only, for loading a
    checkpoint; a LoRA model still needs its base weights)."""
    lora = spec.finetune.lora
    model_spec = spec.model if pretrained or lora else spec.model.model_copy(update={"pretrained": False})
    tasks = {n: len(c) for n, c in (task_classes or {}).items()} or None
    return build_model(model_spec, input_shape, num_classes, spec.data.normalize, lora, tasks,
                       spec.task_weighting == "uncertainty")  # fmt: skip
