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

import numpy as np
import torch

from shiftray.data.arrays import DomainArrays, UnlabelledArrays
from shiftray.data.batches.base import Augment, DABatch, augmented_batch
from shiftray.errors import UserInputError


class DomainStream:
    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.shard = n // world
        if self.shard < batch_size:
            raise UserInputError(
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
    """Source and target streams for one worker; ``batch(step)`` -> DABatch on CPU.

    ``source=None`` is the source-free mode: no source stream exists, so nothing can read it.
    ``weak`` / ``strong`` are augmentations (tensor -> tensor) drawing from torch's global RNG,
    which the loop seeds per step; ``strong`` set means batches carry ``x_t_strong``.
    """

    def __init__(
        self, source: DomainArrays | None, target: UnlabelledArrays, batch_size: int, seed: int,
        rank: int = 0, world: int = 1, weak: Augment | None = None, strong: Augment | None = None,
        augment_source: bool = False, labelled: DomainArrays | None = None,
    ) -> None:  # fmt: skip
        if source is not None and source.y is None:
            raise UserInputError(f"source domain {source.domain!r} has no labels")
        self.source = source
        if isinstance(target, DomainArrays):  # the guarantee: target labels stop here
            target = target.without_labels()
        self.target = target
        self.src = (
            None if source is None else DomainStream(len(source), batch_size, seed * 2, rank, world)
        )
        self.tgt = DomainStream(len(target), batch_size, seed * 2 + 1, rank, world)
        self.weak, self.strong, self.augment_source = weak, strong, augment_source
        self.labelled, self.seed, self.rank = labelled, seed, rank
        self.labelled_batch = batch_size  # drawn with replacement: k x classes may be fewer

    def _labelled(self, step: int) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """A labelled-target batch drawn with replacement (k x classes rows can be fewer than a
        batch), a pure function of (seed, step, rank) like the other streams."""
        if self.labelled is None:
            return None, None
        rng = np.random.default_rng([self.seed, 7, step, self.rank])
        i = rng.integers(0, len(self.labelled), size=self.labelled_batch)
        x = torch.from_numpy(self.labelled.x[i])
        if self.weak is not None and self.augment_source:  # the labelled view, as the source's
            x = self.weak(x)
        return x, torch.from_numpy(self.labelled.y[i])

    def close(self) -> None:
        pass  # nothing to release (the streamed counterpart closes its readers)

    def batch(self, step: int) -> DABatch:
        x_s = y_s = y_aux = None
        if self.src is not None:
            i = self.src.indices(step)
            x_s, y_s = torch.from_numpy(self.source.x[i]), torch.from_numpy(self.source.y[i])
            if self.source.tasks:  # in the order the spec lists the tasks (dicts keep it)
                y_aux = torch.from_numpy(np.stack([t[i] for t in self.source.tasks.values()], 1))
        j = self.tgt.indices(step)
        raw_t = torch.from_numpy(self.target.x[j])
        batch = augmented_batch(
            x_s, y_s, raw_t, torch.from_numpy(j), self.weak, self.strong, self.augment_source
        )
        batch.x_l, batch.y_l = self._labelled(step)
        batch.y_aux = y_aux
        return batch
