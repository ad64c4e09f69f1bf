"""Building blocks shared by methods: gradient reversal and progress ramps (pure functions)."""

from __future__ import annotations

import math

import torch


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coeff * grad, None


def frozen(module: torch.nn.Module) -> torch.nn.Module:
    """No gradients for ``module`` (teachers): DDP then leaves its parameters out of the reducer."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def grad_reverse(x: torch.Tensor, coeff: float) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``-coeff`` backward (Ganin & Lempitsky 2015)."""
    return _GradReverse.apply(x, coeff)


def sigmoid_ramp(progress: float, alpha: float = 10.0, high: float = 1.0) -> float:
    """``high * (2 / (1 + exp(-alpha p)) - 1)``: 0 at p=0, -> high as p -> 1 (DANN's lambda_p)."""
    return high * (2.0 / (1.0 + math.exp(-alpha * progress)) - 1.0)


def entropy(probs: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-example Shannon entropy H(p) = -sum_c p_c log p_c (natural log)."""
    return -(probs * torch.log(probs + eps)).sum(dim=1)
