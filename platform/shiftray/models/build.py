"""build_model(spec) -> AdaptModel: the one constructor shared by training and serving."""

from __future__ import annotations

import torch
from torch import nn

from shiftray.config.schema import ModelSpec
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
        normalize: str = "none",
    ) -> None:  # fmt: skip
        super().__init__()
        self.normalize = normalize
        if normalize == "zscore":  # fitted on the training data (set_normalization), saved
            self.register_buffer("norm_mean", torch.zeros(input_shape))
            self.register_buffer("norm_std", torch.ones(input_shape))
        bb = build_backbone(spec.backbone, input_shape, spec.pretrained, spec.backbone_kwargs)
        self.backbone = bb.module
        self.layer_groups = bb.layer_groups
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
        named = dict(self.backbone.named_parameters())
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
        groups["head"] = list(self.head.parameters())
        return groups


def build_model(
    spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, normalize: str = "none"
) -> AdaptModel:
    return AdaptModel(spec, tuple(input_shape), num_classes, normalize)
