"""Loop hooks: what tests (and tools) install to watch or disturb a run; a plain run has none.

A hook sees three moments: after each optimizer step, just before a checkpoint's rename makes
it visible, and at the end. Hooks travel to Ray workers by pickle, so they are small frozen
dataclasses defined here (a test module is not importable on a Ray worker).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import torch

from shiftray.train.context import WorkerContext


class LoopHook:
    """No-op base: override the moments you need."""

    def after_step(self, ctx: WorkerContext, step: int) -> None:
        pass

    def before_checkpoint_commit(self, ctx: WorkerContext, step: int) -> None:
        pass

    def at_end(self, ctx: WorkerContext, run_dir: Path, module: torch.nn.Module) -> None:
        pass


@dataclass(frozen=True)
class KillOnce(LoopHook):
    """SIGKILL rank ``rank``'s process once, after step ``step`` (``where="step"``) or in the
    middle of writing that step's checkpoint (``"checkpoint"``: files written, not renamed);
    ``marker`` remembers that it happened, so the restarted worker runs on."""

    step: int
    marker: str
    rank: int = 0
    where: str = "step"

    def _maybe_kill(self, ctx: WorkerContext, step: int, where: str) -> None:
        if ctx.rank != self.rank or where != self.where or step != self.step:
            return
        if Path(self.marker).exists():
            return
        Path(self.marker).write_text(str(step))
        os.kill(os.getpid(), signal.SIGKILL)

    def after_step(self, ctx, step):
        self._maybe_kill(ctx, step, "step")

    def before_checkpoint_commit(self, ctx, step):
        self._maybe_kill(ctx, step, "checkpoint")


def param_digest(module: torch.nn.Module) -> dict[str, str]:
    """sha256 of every parameter's bytes, by name: equal digests mean bit-identical weights."""
    return {
        name: hashlib.sha256(p.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        for name, p in module.named_parameters()
    }


@dataclass(frozen=True)
class ParamDigests(LoopHook):
    """Each rank writes ``params_rank<r>.json`` (`param_digest`) into the run directory."""

    def at_end(self, ctx, run_dir, module):
        (Path(run_dir) / f"params_rank{ctx.rank}.json").write_text(json.dumps(param_digest(module)))


@dataclass(frozen=True)
class NodeIds(LoopHook):
    """Each rank writes the Ray node it ran on to ``node_rank<r>.txt`` (multi-node tests)."""

    def at_end(self, ctx, run_dir, module):
        import ray

        node = ray.get_runtime_context().get_node_id()
        (Path(run_dir) / f"node_rank{ctx.rank}.txt").write_text(node)
