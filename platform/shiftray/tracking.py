"""Tracking from rank 0 only: metrics.jsonl in the run directory, and W&B.

W&B runs ``online`` (needs WANDB_API_KEY), ``offline`` (files under <run_dir>/wandb, sync later
with ``wandb sync``) or ``disabled``; ``WANDB_MODE`` and ``WANDB_DISABLED`` in the environment
make it quieter (`wandb_mode`). ``online`` without a key falls back to offline with a
warning rather than failing a long job. The W&B run id is the run directory's name plus a
stable suffix, so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from shiftray.config.schema import JobSpec


def metrics_path(run_dir: Path) -> Path:
    return Path(run_dir) / "metrics.jsonl"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = metrics_path(run_dir)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return out


_QUIETER = ("online", "offline", "disabled")


def wandb_mode(spec_mode: str) -> str:
    """The spec's W&B mode, made quieter by W&B's own switches in the environment:
    ``WANDB_DISABLED=true`` or ``WANDB_MODE=disabled`` disable it, ``WANDB_MODE=offline`` (or
    ``dryrun``) keeps it offline. The environment never turns on what the spec turned off."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        env = "disabled"
    env = {"dryrun": "offline"}.get(env, env)
    if env not in _QUIETER:
        return spec_mode
    return max(spec_mode, env, key=_QUIETER.index)


class Tracker:
    def __init__(self, spec: JobSpec, run_dir: Path, start_step: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._wandb = None
        if not enabled:
            return
        # A resumed run drops records past its checkpoint: they will be produced again.
        kept = [r for r in read_metrics(self.run_dir) if r.get("step", 0) <= start_step]
        tmp = metrics_path(self.run_dir).with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(metrics_path(self.run_dir))
        self._file = open(metrics_path(self.run_dir), "a", buffering=1)
        mode = wandb_mode(spec.tracking.wandb)
        if mode == "online" and not os.environ.get("WANDB_API_KEY"):
            warnings.warn(
                "tracking.wandb=online but WANDB_API_KEY is not set: logging offline", stacklevel=2
            )
            mode = "offline"
        if mode != "disabled":
            import wandb

            run_id = f"{self.run_dir.name}-{hashlib.sha1(str(self.run_dir.resolve()).encode()).hexdigest()[:8]}"
            self._wandb = wandb.init(
                project=spec.tracking.project,
                group=spec.tracking.group,
                name=self.run_dir.name,
                id=run_id,
                resume="allow",
                mode=mode,
                dir=str(self.run_dir),
                config=spec.model_dump(mode="json"),
                settings=wandb.Settings(silent=True, console="off"),
            )

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
