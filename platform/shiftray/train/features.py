"""Cached feature extraction: with a frozen backbone and no augmentation, the backbone's
output for each example never changes, so compute it once and train only the new layers."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from shiftray.data.arrays import DomainData
from shiftray.models.build import AdaptModel


@torch.no_grad()
def backbone_features(model: AdaptModel, arrays, batch_size: int, device):
    model.backbone.eval()
    out = []
    for start in range(0, len(arrays), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(arrays.x[start : start + batch_size])).to(device)
        out.append(model.features(x).float().cpu().numpy())
    return dataclasses.replace(arrays, x=np.concatenate(out))


def cache_features(model: AdaptModel, data: DomainData, batch_size: int, device) -> DomainData:
    """DomainData whose inputs are backbone features; the model then skips its backbone."""
    conv = lambda a: None if a is None else backbone_features(model, a, batch_size, device)  # noqa: E731
    cached = dataclasses.replace(
        data,
        source=conv(data.source),
        target=conv(data.target),
        target_test=conv(data.target_test),
        source_val=conv(data.source_val),
        target_labelled=conv(data.target_labelled),
    )
    model.cached = True
    return cached
