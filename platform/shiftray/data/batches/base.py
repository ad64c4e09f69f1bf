"""What a training step consumes: `DABatch`, and the contract every batch source keeps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from shiftray.layout import as_format


@dataclass
class DABatch:
    """One training batch: labelled source (None when source-free), unlabelled target.

    ``x_t`` is the (weakly augmented, if augmentation is on) target view, ``x_t_strong`` a
    strongly augmented view of the same examples, ``idx_t`` their indices in the target set.
    ``x_l``, ``y_l``: labelled target rows (semi-supervised DA; None otherwise), which the
    training module, not the method, turns into a loss; so are ``y_aux``, the source rows'
    labels of a multi-task job's extra tasks (-1: none).
    """

    x_s: torch.Tensor | None
    y_s: torch.Tensor | None
    x_t: torch.Tensor
    x_t_strong: torch.Tensor | None = None
    idx_t: torch.Tensor | None = None
    x_l: torch.Tensor | None = None
    y_l: torch.Tensor | None = None
    y_aux: torch.Tensor | None = None  # multi-task: (N, T) the source rows' extra task labels

    def to(self, device: torch.device | str, channels_last: bool = False) -> DABatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            return as_format(t.to(device, non_blocking=True), channels_last)

        return DABatch(*(move(getattr(self, f.name)) for f in fields(self)))


Augment = Callable[[torch.Tensor], torch.Tensor]


def augmented_batch(
    x_s: torch.Tensor | None, y_s: torch.Tensor | None, raw_t: torch.Tensor,
    idx_t: torch.Tensor | None, weak: Augment | None, strong: Augment | None,
    augment_source: bool,
) -> DABatch:  # fmt: skip
    """The batch both pairings hand out: the weak view of the target (and of the source when
    ``augment_source``), and a strong view of the same target examples when ``strong`` is set."""
    if x_s is not None and weak is not None and augment_source:
        x_s = weak(x_s)
    x_t = weak(raw_t) if weak is not None else raw_t
    x_t_strong = strong(raw_t) if strong is not None else None
    return DABatch(x_s, y_s, x_t, x_t_strong, idx_t)
