"""Where a worker runs and how it reports: the only place the loop meets its context.

The loop is the same in every context; what differs is (a) where the worker sits (rank, world,
device) and (b) how metrics and checkpoints leave it. A `Reporter` hides (b):

- `LocalReporter`: in-process runs (tests, benchmarks, `--no-ray`, a single-worker Tune trial
  that wants no Ray Train): nothing to register, no checkpoint to fetch;
- `RayTrainReporter`: Ray Train workers (and so Tune trials that run a TorchTrainer, whose
  ``TuneReportCallback`` forwards what is reported here): ``ray.train.report`` registers the
  checkpoint (uploaded to ``storage_path`` first when set), ``ray.train.get_checkpoint``
  returns the last registered one after a restart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class WorkerContext:
    rank: int
    world: int
    device: torch.device

    @classmethod
    def current(cls, use_gpu: bool, reporter: Reporter) -> WorkerContext:
        if dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        else:
            rank, world = 0, 1
        device = reporter.device()
        if device is None:
            cuda = use_gpu and torch.cuda.is_available()  # torchrun sets LOCAL_RANK
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else None
        return cls(rank, world, device or torch.device("cpu"))

    def all_min(self, value: int) -> int:
        """The minimum of ``value`` over the ranks (an all-reduce; NCCL needs device tensors)."""
        if self.world == 1 or not dist.is_initialized():
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())


class RegisteredCheckpoint(Protocol):
    path: str

    def to_directory(self, path: str) -> str: ...


class Reporter(Protocol):
    """How metrics and checkpoints leave a worker (see the module docstring)."""

    in_ray: bool

    def device(self) -> torch.device | None: ...

    def registered(self) -> RegisteredCheckpoint | None: ...

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None: ...


@dataclass(frozen=True)
class LocalReporter:
    in_ray: bool = False

    def device(self) -> torch.device | None:
        return None

    def registered(self) -> RegisteredCheckpoint | None:
        return None

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        pass


@dataclass(frozen=True)
class RayTrainReporter:
    """``upload``: checkpoints go to ``tracking.storage_path``. Without it the run directory is
    Ray's storage and the complete checkpoint directory is registered in place; with it, Ray
    copies the directory to the storage URI (pyarrow.fs) and registers it only once the copy is
    complete, so a half-uploaded checkpoint is never the one a restart loads."""

    upload: bool = False
    in_ray: bool = True

    def device(self) -> torch.device | None:
        import ray.train.torch

        return ray.train.torch.get_device()

    def registered(self) -> RegisteredCheckpoint | None:
        import ray.train

        return ray.train.get_checkpoint()

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        import ray.train

        mode = ray.train.CheckpointUploadMode
        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None
        ray.train.report(
            metrics, checkpoint=ckpt, checkpoint_dir_name=checkpoint.name if checkpoint else None,
            checkpoint_upload_mode=mode.SYNC if self.upload else mode.NO_UPLOAD,
            delete_local_checkpoint_after_upload=False if self.upload else None,
        )  # fmt: skip
