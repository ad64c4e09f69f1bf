"""Augmentations as tensor -> tensor functions on a batch, drawing from torch's global RNG.

The loop seeds torch's RNG from (seed, rank, step) before each batch, so augmented batches are
reproducible and a resumed run sees the very same views.

- images (N, C, H, W) in [0, 1]: *weak* = random translation by up to ``shift`` pixels (pad and
  crop) and optional horizontal flip (the FixMatch weak view); *strong* = weak + RandAugment
  (Cubuk et al. 2020, torchvision's ops, per example) + Cutout (DeVries & Taylor 2017).
- vectors (N, D): *weak* = Gaussian noise of ``noise`` x each feature's batch std;
  *strong* = weak noise x 2 + feature dropout with rate ``dropout``.
- token ids (N, L) of a text backbone: *weak* = the text itself; *strong* = random deletion of
  each token with rate ``dropout`` and one swap of neighbouring tokens per text (the EDA
  operations, Wei & Zou, EMNLP 2019), the first token ([CLS]) and the last real one ([SEP])
  kept, the survivors moved left and the tail padded.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Augment = Callable[[torch.Tensor], torch.Tensor]


def random_translate(x: torch.Tensor, shift: int) -> torch.Tensor:
    if shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    dx = torch.randint(0, 2 * shift + 1, (n,))
    dy = torch.randint(0, 2 * shift + 1, (n,))
    rows = (
        (dy[:, None] + torch.arange(h)[None])
        .view(n, 1, h, 1)
        .expand(n, x.shape[1], h, w + 2 * shift)
    )
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None]).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    return out.gather(3, cols)


def random_flip(x: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(x.shape[0]) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    n, _, h, w = x.shape
    cy, cx = torch.randint(0, h, (n,)), torch.randint(0, w, (n,))
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    box = ((ys - cy.view(n, 1, 1)).abs() <= size // 2) & (
        (xs - cx.view(n, 1, 1)).abs() <= size // 2
    )
    return x.masked_fill(box.unsqueeze(1), 0.5)


def image_augment(shift: int = 2, flip: bool = False, strong: bool = False, ops: int = 2,
                  magnitude: int = 10, cutout_frac: float = 0.25) -> Augment:  # fmt: skip
    randaug = None
    if strong:
        from torchvision.transforms import v2

        randaug = v2.RandAugment(num_ops=ops, magnitude=magnitude)

    def apply(x: torch.Tensor) -> torch.Tensor:
        x = random_translate(x, shift)
        if flip:
            x = random_flip(x)
        if randaug is not None:
            u8 = (x * 255).round().to(torch.uint8)
            x = torch.stack([randaug(img) for img in u8]).float() / 255
            x = cutout(x, max(1, int(cutout_frac * x.shape[-1])))
        return x

    return apply


def vector_augment(noise: float = 0.1, dropout: float = 0.0) -> Augment:
    def apply(x: torch.Tensor) -> torch.Tensor:
        std = x.std(dim=0, keepdim=True) if x.shape[0] > 1 else torch.ones_like(x[:1])
        x = x + noise * std * torch.randn_like(x)
        if dropout:
            x = x * (torch.rand_like(x) >= dropout) / (1 - dropout)
        return x

    return apply


def token_augment(pad: int, drop: float) -> Augment:
    def apply(ids: torch.Tensor) -> torch.Tensor:
        n, length = ids.shape
        real = ids != pad
        last = (real.sum(1) - 1).clamp_min(0)
        pos = torch.arange(length).expand(n, length)
        ends = (pos == 0) | (pos == last[:, None])
        keep = real & (ends | (torch.rand(n, length) >= drop))
        # one swap per text of a random pair (i, i+1) strictly inside (first, last)
        i = 1 + (torch.rand(n) * (last - 2).clamp_min(0)).long()
        can = last >= 3
        rows = torch.arange(n)[can]
        a, b = ids[rows, i[can]].clone(), ids[rows, i[can] + 1].clone()
        ids = ids.clone()
        ids[rows, i[can]], ids[rows, i[can] + 1] = b, a
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices  # kept first
        out = ids.gather(1, order)
        return out.masked_fill(~keep.gather(1, order), pad)

    return apply


def build_augment(kind: str, input_shape: tuple[int, ...], spec, pad: int | None = None
                  ) -> Augment | None:  # fmt: skip
    """``kind`` is 'weak' or 'strong'; ``spec`` an AugmentSpec; ``pad``: the pad id when the
    inputs are token ids (a text backbone). None when augmentation is off."""
    if not spec.enabled:
        return None
    if pad is not None:
        return token_augment(pad, spec.dropout) if kind == "strong" else None
    if len(input_shape) == 3:
        return image_augment(
            spec.shift, spec.flip, strong=kind == "strong", ops=spec.randaugment_ops,
            magnitude=spec.randaugment_magnitude, cutout_frac=spec.cutout,
        )  # fmt: skip
    if kind == "strong":
        return vector_augment(2 * spec.noise, spec.dropout)
    return vector_augment(spec.noise, 0.0)
