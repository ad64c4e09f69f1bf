"""Domain data in memory: what readers return and the loop trains on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class DomainArrays:
    """One labelled (or label-less test) domain split in memory: inputs ``x`` (N, *shape)
    float32, labels ``y`` (N,) or None. ``x`` can also be `EncodedImages` (a streamed job's
    test split): indexing it decodes."""

    x: np.ndarray  # or shiftray.data.images.EncodedImages
    y: np.ndarray | None
    domain: str = ""
    split: str = ""
    tasks: dict[str, np.ndarray] | None = None  # multi-task: the extra tasks' labels, by name

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def rows(self, idx: np.ndarray, split: str | None = None) -> DomainArrays:
        """These rows (indices or a mask), labels and task labels alike."""
        x = self.x[idx] if isinstance(self.x, np.ndarray) else self.x.take(idx)  # EncodedImages
        tasks = None if self.tasks is None else {k: v[idx] for k, v in self.tasks.items()}
        y = None if self.y is None else self.y[idx]
        return DomainArrays(x, y, self.domain, self.split if split is None else split, tasks)

    def without_labels(self) -> UnlabelledArrays:
        return UnlabelledArrays(self.x, self.domain, self.split)


@dataclass
class UnlabelledArrays:
    """The unlabelled target training split: inputs only. It has no ``y`` at all, so nothing
    between the reader and the method can read a target label; evaluation reads the target's
    labels from ``DomainData.target_test``, for reporting."""

    x: np.ndarray  # or EncodedImages
    domain: str = ""
    split: str = ""

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class DomainData:
    """What a training job needs: labelled source (None for source-free methods), unlabelled
    target, labelled target test; a held-out labelled source split (``data.source_val_fraction``)
    and, for streamed jobs, what the workers need to know about the shards (``stream``, a
    `shiftray.data.batches.stream.StreamInfo`; the training splits are then empty here)."""

    source: DomainArrays | None
    target: UnlabelledArrays
    target_test: DomainArrays
    classes: list[str]
    input_shape: tuple[int, ...]
    source_val: DomainArrays | None = None
    stream: Any = None
    normalization: Any = None  # data.normalize fitted on the training rows (data.normalize)
    target_labelled: DomainArrays | None = None  # semi-supervised: k labelled target rows/class
    task_classes: dict[str, list[str]] | None = None  # multi-task: each extra task's classes

    def __post_init__(self) -> None:
        if isinstance(self.target, DomainArrays):  # the guarantee: no target label gets past
            self.target = self.target.without_labels()

    @property
    def num_classes(self) -> int:
        return len(self.classes)
