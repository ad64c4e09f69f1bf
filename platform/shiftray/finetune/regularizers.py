"""L2-SP: keep fine-tuned weights near the pre-trained starting point.

Li, Grandvalet, Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional
Networks", ICML 2018:

    Omega(w) = alpha/2 * ||w_S - w_S^0||^2 + beta/2 * ||w_new||^2

w_S are the backbone weights and w_S^0 their pre-trained values (a snapshot taken when the
model is built: the same on every rank and after a resume, since building is deterministic);
w_new the new layers. It replaces weight decay for the groups it covers.
"""

from __future__ import annotations

import torch
from torch import nn


class L2SP(nn.Module):
    def __init__(
        self, backbone: nn.Module, new_layers: list[nn.Parameter], alpha: float, beta: float
    ):
        super().__init__()
        self.alpha, self.beta = alpha, beta
        self.params = [p for p in backbone.parameters() if p.requires_grad]  # not a LoRA base
        self.start = [p.detach().clone() for p in self.params]  # not a buffer: not checkpointed
        self.new = new_layers

    def to_device(self, device: torch.device) -> L2SP:
        self.start = [s.to(device) for s in self.start]
        return self

    def forward(self) -> torch.Tensor:
        sp = sum(((p - s) ** 2).sum() for p, s in zip(self.params, self.start, strict=True))
        new = sum((p**2).sum() for p in self.new)
        return 0.5 * self.alpha * sp + 0.5 * self.beta * new
