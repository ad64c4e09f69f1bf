"""Per-worker batches of source and target data, as pure functions of the step.

`DomainStream` gives the example indices for step ``s`` on rank ``r`` of ``w`` workers:
epoch ``e`` is a permutation seeded by (seed, e); rank ``r`` takes every ``w``-th element
(equal shards, the remainder dropped); step ``s`` takes the ``s mod B``-th batch of epoch
``s div B``, with ``B`` batches per epoch. The shorter domain simply wraps into its next epoch
more often. Because nothing is stateful, a resumed run draws exactly the batches it would have.

`Pairing` joins the two streams into a `DABatch`. Target labels are dropped here, before any
method can see them (unsupervised adaptation never reads them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shiftray.data.formats import DomainArrays


@dataclass
class DABatch:
    """One training batch: labelled source, unlabelled target."""

    x_s: torch.Tensor
    y_s: torch.Tensor
    x_t: torch.Tensor
    x_t_strong: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> DABatch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return DABatch(move(self.x_s), move(self.y_s), move(self.x_t), move(self.x_t_strong))


class DomainStream:
    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.shard = n // world
        if self.shard < batch_size:
            raise ValueError(
                f"a domain of {n} examples over {world} worker(s) gives {self.shard} per worker, "
                f"fewer than the per-worker batch of {batch_size}; lower train.batch_size"
            )
        self.batches_per_epoch = self.shard // batch_size

    def indices(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.batches_per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        mine = perm[self.rank :: self.world][: self.shard]
        return mine[k * self.batch_size : (k + 1) * self.batch_size]


class Pairing:
    """Source and target streams for one worker; ``batch(step)`` -> DABatch on CPU."""

    def __init__(
        self, source: DomainArrays, target: DomainArrays, batch_size: int, seed: int,
        rank: int = 0, world: int = 1,
    ) -> None:  # fmt: skip
        if source.y is None:
            raise ValueError(f"source domain {source.domain!r} has no labels")
        self.source = source
        self.target = target.without_labels()  # the guarantee: target labels stop here
        self.src = DomainStream(len(source), batch_size, seed * 2 + 0, rank, world)
        self.tgt = DomainStream(len(target), batch_size, seed * 2 + 1, rank, world)

    def batch(self, step: int) -> DABatch:
        i, j = self.src.indices(step), self.tgt.indices(step)
        return DABatch(
            x_s=torch.from_numpy(self.source.x[i]),
            y_s=torch.from_numpy(self.source.y[i]),
            x_t=torch.from_numpy(self.target.x[j]),
        )
