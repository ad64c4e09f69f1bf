"""build_model(spec) -> AdaptModel: the one constructor shared by training and serving."""

from __future__ import annotations

import torch
from torch import nn

from shiftray.config.schema import ModelSpec
from shiftray.models.backbones import build_backbone
from shiftray.models.heads import bottleneck, classifier


class AdaptModel(nn.Module):
    """normalise -> backbone -> bottleneck -> classifier; forward returns (logits, features).

    ``features`` are the bottleneck outputs: what discriminators and alignment losses see.
    Inputs are raw (images in [0, 1], vectors as the reader gives them).
    """

    def __init__(self, spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        bb = build_backbone(spec.backbone, input_shape, spec.pretrained, spec.backbone_kwargs)
        self.backbone = bb.module
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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.input_mean is not None:
            x = (x - self.input_mean) / self.input_std
        features = self.bottleneck(self.backbone(x))
        return self.head(features), features

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role, for per-group learning rates (pre-trained vs new)."""
        return {
            "backbone": list(self.backbone.parameters()),
            "bottleneck": list(self.bottleneck.parameters()),
            "head": list(self.head.parameters()),
        }


def build_model(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> AdaptModel:
    return AdaptModel(spec, tuple(input_shape), num_classes)
