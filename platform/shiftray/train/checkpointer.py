"""Checkpoint saving, pruning and resume agreement for one worker, behind one object.

Rank 0 writes each checkpoint (atomically, `shiftray.train.checkpoint.save_checkpoint`); every
rank reports it through the `Reporter` (Ray Train registers it, uploading it to
``tracking.storage_path`` first when set); rank 0 then prunes the run directory to the newest
``keep`` checkpoints plus the protected ones (the best step under early stopping). At start,
all ranks agree on one checkpoint to resume from (`agree_on_resume`), fetching it from storage
when it is not on their node.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from shiftray.train.checkpoint import (
    TrainState,
    agree_on_resume,
    checkpoint_name,
    checkpoint_step,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    recover_replaced,
    save_checkpoint,
)
from shiftray.train.context import Reporter, WorkerContext
from shiftray.train.hooks import LoopHook


class Checkpointer:
    def __init__(
        self, run_dir: Path, ctx: WorkerContext, reporter: Reporter, keep: int,
        hooks: Sequence[LoopHook] = (),
    ) -> None:  # fmt: skip
        self.run_dir, self.ctx, self.reporter, self.keep = Path(run_dir), ctx, reporter, keep
        self.hooks = tuple(hooks)
        self.protect: tuple[int, ...] = ()  # steps never pruned (the best one)

    def resume_point(self, fresh: bool = False) -> Path | None:
        """The checkpoint to resume from, the same step on every rank. ``fresh`` (``shiftray
        run --restart``): until Ray has registered a checkpoint of this run, the checkpoints of
        an earlier run left in this node's run directory are deleted, not resumed from (the
        driver deleted its own; a worker on another node keeps its copies)."""
        registered = self.reporter.registered()
        if getattr(registered, "foreign", False):  # PBT: continue from the donor trial's model
            for old in list_checkpoints(self.run_dir):
                shutil.rmtree(old, ignore_errors=True)
        if fresh and registered is None:
            for old in list_checkpoints(self.run_dir):
                shutil.rmtree(old, ignore_errors=True)
        recover_replaced(self.run_dir)
        local = {checkpoint_step(p): p for p in list_checkpoints(self.run_dir)}
        reported = checkpoint_step(registered.path) if registered is not None else None
        step = agree_on_resume(list(local), reported, self.ctx.all_min)
        if step is None:
            return None
        if step in local:
            return local[step]
        path = self.run_dir / checkpoint_name(step)  # not on this node: fetch it from storage
        tmp = self.run_dir / f".{path.name}.rank{self.ctx.rank}.download"
        registered.to_directory(str(tmp))
        try:
            os.replace(tmp, path)  # complete, or not there at all
        except OSError:  # another rank on this node got it there first
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    def load(self, ckpt: Path, module: torch.nn.Module, optimizer) -> TrainState:
        return load_checkpoint(ckpt, module, optimizer)

    def save(
        self, module: torch.nn.Module, optimizer, state: TrainState, spec_yaml: str, labels: dict,
        extra: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """Write (rank 0), report with ``extra`` (report-only numbers: the loop's time), prune."""
        ckpt = None
        if self.ctx.rank == 0:

            def before_commit() -> None:  # a kill here must lose nothing (tests inject one)
                for hook in self.hooks:
                    hook.before_checkpoint_commit(self.ctx, state.step)

            ckpt = save_checkpoint(
                self.run_dir, module, optimizer, state, spec_yaml, labels, before_commit
            )
        self.reporter.report({"step": state.step, **state.metrics, **(extra or {})}, ckpt)
        if self.ctx.rank == 0:
            prune_checkpoints(self.run_dir, self.keep, self.protect)

    def report(self, metrics: dict[str, Any]) -> None:
        """Metrics without a checkpoint (an evaluation between checkpoints)."""
        self.reporter.report(metrics, None)
