"""Backbones: feature extractors with a small contract that the rest of shiftray builds on.

A backbone factory takes (input_shape, pretrained, **kwargs) and returns a `Backbone`:
the module maps a batch to (N, out_dim) features, and ``mean``/``std`` say how raw inputs in
[0, 1] are normalised for it (applied inside the model, so serving takes raw inputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from shiftray.errors import UserInputError
from shiftray.registry import BACKBONES, family_of


@dataclass
class Backbone:
    """``layer_groups``: parameter names of ``module``, grouped from the input (0, the stem) to
    the output; what layer-wise learning rates and gradual unfreezing act on."""

    module: nn.Module
    out_dim: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layer_groups: list[list[str]] = field(default_factory=list)


def groups_by_child(module: nn.Module) -> list[list[str]]:
    """One group per top-level child that has parameters (for simple sequential nets)."""
    groups = []
    for name, child in module.named_children():
        names = [f"{name}.{n}" for n, _ in child.named_parameters()]
        if names:
            groups.append(names)
    return groups


def lenet(input_shape, pretrained=False, channels=(20, 50), dropout=0.5) -> Backbone:
    """LeNet-style CNN for digits (LeCun et al. 1998; the variant TLlib uses for MNIST/USPS).

    conv5x5(c1) -> maxpool2 -> ReLU -> conv5x5(c2) -> Dropout2d -> maxpool2 -> ReLU -> flatten.
    """
    if pretrained:
        raise UserInputError("model.pretrained: lenet has no pre-trained weights; use false")
    c_in, h, w = input_shape
    c1, c2 = channels
    module = nn.Sequential(
        nn.Conv2d(c_in, c1, 5),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 5),
        nn.Dropout2d(dropout),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Flatten(),
    )
    with torch.no_grad():
        out_dim = module.eval()(torch.zeros(1, c_in, h, w)).shape[1]
    return Backbone(
        module.train(), int(out_dim), (0.5,) * c_in, (0.5,) * c_in, groups_by_child(module)
    )


lenet.nhwc_on_cpu = True  # channels_last: auto uses NHWC on CPU too (measured faster)


def mlp(input_shape, pretrained=False, hidden=(256,), activation="relu", dropout=0.0) -> Backbone:
    """Multi-layer perceptron over feature vectors; ``hidden=[]`` passes inputs through."""
    if pretrained:
        raise UserInputError("model.pretrained: mlp has no pre-trained weights; use false")
    acts = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU}
    if activation not in acts:
        raise UserInputError(
            f"model.backbone_kwargs.activation={activation!r}; allowed: {', '.join(acts)}"
        )
    dim = 1
    for s in input_shape:
        dim *= s
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(dim, h), acts[activation]()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        dim = h
    module = nn.Sequential(*layers)
    return Backbone(module, dim, layer_groups=groups_by_child(module))


class _TimmFeatures(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def timm_backbone(name: str, input_shape, pretrained: bool | str = False, **kwargs) -> Backbone:
    """Any timm model as a feature extractor (classifier removed, pooled pre-logits)."""
    import timm

    extra = dict(kwargs)
    if pretrained == "imagenet-package":
        from shiftray.models.pretrained import create_with_package_weights

        model = create_with_package_weights(name, num_classes=0, in_chans=input_shape[0], **extra)
    else:
        if isinstance(pretrained, str):
            extra["pretrained_cfg_overlay"] = dict(file=pretrained)
            pretrained = True
        model = timm.create_model(
            name, pretrained=pretrained, num_classes=0, in_chans=input_shape[0], **extra
        )
    cfg = model.pretrained_cfg or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is not None and len(mean) != input_shape[0]:
        mean = (sum(mean) / len(mean),) * input_shape[0]
        std = (sum(std) / len(std),) * input_shape[0]
    from timm.models import group_parameters

    grouped = group_parameters(model, model.group_matcher(coarse=True))
    groups = [[f"model.{n}" for n in grouped[k]] for k in sorted(grouped)]
    return Backbone(_TimmFeatures(model), int(model.num_features), mean, std, groups)


def build_backbone(name: str, input_shape, pretrained: bool | str, kwargs: dict) -> Backbone:
    """A registered backbone by name, or one of a family (`shiftray.registry.FAMILIES`:
    ``timm/``, ``hf/``, ``clip/``) by its library's model name."""
    fam = family_of(name)
    if fam is not None:
        return fam.load()(name.removeprefix(fam.prefix), input_shape, pretrained, **kwargs)
    try:
        return BACKBONES.get(name)(tuple(input_shape), pretrained, **kwargs)
    except TypeError as e:
        raise UserInputError(f"model.backbone_kwargs for {name!r}: {e}") from None
