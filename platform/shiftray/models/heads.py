"""Heads added on top of a backbone: bottleneck, classifier, domain discriminator."""

from __future__ import annotations

from torch import nn


def bottleneck(in_dim: int, out_dim: int, dropout: float = 0.0) -> nn.Module:
    """Linear -> BatchNorm -> ReLU (-> Dropout): the feature layer adaptation losses act on."""
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def classifier(in_dim: int, num_classes: int, dropout: float = 0.0) -> nn.Module:
    layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(*layers, nn.Linear(in_dim, num_classes))


class DomainDiscriminator(nn.Sequential):
    """MLP scoring P(source | features): hidden layers of Linear (-> BatchNorm) -> ReLU.

    ``hidden=[]`` is logistic regression on the features (the shallow DANN of Ganin et al.).
    """

    def __init__(
        self, in_dim: int, hidden: list[int], batch_norm: bool = True, dropout: float = 0.0
    ):
        layers: list[nn.Module] = []
        for h in hidden:
            layers.append(nn.Linear(in_dim, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
            in_dim = h
        layers.append(nn.Linear(in_dim, 1))
        super().__init__(*layers)
