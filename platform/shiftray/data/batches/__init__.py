"""One batch-source interface for the loop, two implementations, one factory.

`BatchSource.batch(step) -> DABatch` is a pure function of the step (a resumed run draws the
batches the uninterrupted one drew) and ``close()`` releases readers. `Pairing` serves data
held in memory; `StreamPairing` streams Parquet shards through Ray Data. `make_batch_source`
picks one from the data, so the training loop never branches on which it has. Both drop the
target's labels before a batch exists: the in-memory target is `UnlabelledArrays`, the streamed
target reads only its input column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from shiftray.config.schema import StreamSpec
from shiftray.data.arrays import DomainData
from shiftray.data.batches.base import Augment, DABatch
from shiftray.data.batches.memory import Pairing


class BatchSource(Protocol):
    def batch(self, step: int) -> DABatch: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Worker:
    """This worker's share: ``batch_size`` per domain on rank ``rank`` of ``world``."""

    batch_size: int
    seed: int
    rank: int
    world: int
    device: torch.device


def make_batch_source(
    data: DomainData, worker: Worker, shards: dict[str, Any] | None, uses_source: bool,
    weak: Augment | None, strong: Augment | None, augment_source: bool, stream: StreamSpec,
    steps: int,
) -> BatchSource:  # fmt: skip
    """In memory when ``data.stream`` is None, else the streamed ``shards`` (this worker's Ray
    Data iterators by domain). ``uses_source=False`` (source-free): the source is never read."""
    w = worker
    if data.stream is None:
        source = data.source if uses_source else None
        return Pairing(source, data.target, w.batch_size, w.seed, w.rank, w.world, weak, strong,
                       augment_source, data.target_labelled)  # fmt: skip
    from shiftray.data.batches.stream import StreamPairing

    return StreamPairing(
        shards, data.stream, w.batch_size, w.seed, w.rank, w.world, stream.shuffle_buffer,
        stream.prefetch_batches, stream.decode_threads, w.device, weak, strong, augment_source,
        steps=steps, read_ahead=stream.read_ahead,
    )  # fmt: skip
