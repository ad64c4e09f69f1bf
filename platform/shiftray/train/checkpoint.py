"""Run-directory checkpoints, written atomically.

A checkpoint is a directory ``checkpoint_<step:08d>`` inside the run directory:

- ``model.safetensors``   the AdaptModel (all serving needs, with spec.yaml and labels.json)
- ``method.safetensors``  the method's own modules (discriminator, teacher, ...)
- ``optimizer.pt``        optimizer state, loaded with ``weights_only=True``
- ``state.json``          step, progress, seed, metrics
- ``spec.yaml``           the resolved job spec
- ``labels.json``         class names, input shape and input contract (`checkpoint_labels`)

It is written into a hidden temporary directory, flushed, and renamed into place, so a
directory with the final name is always complete; temporary leftovers are ignored and removed.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from shiftray.models.load import CKPT_RE, list_checkpoints, read_weights
from shiftray.train.module import TrainModule

if TYPE_CHECKING:
    from shiftray.config.schema import JobSpec


@dataclass
class TrainState:
    step: int
    total_steps: int
    seed: int
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # unfreeze stage, early-stopping state, ...

    @property
    def progress(self) -> float:
        return self.step / self.total_steps


def checkpoint_labels(labels: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """labels.json: ``labels`` (class names, ``input_shape``, tasks) and ``"input"``, the input
    contract (`shiftray.data.readers.base.InputContract` as JSON: kind, shape, resize, range,
    dtype, tokenizer) that serving takes, asked of the job's reader and backbone here, while
    they are the ones the model was trained with."""
    from shiftray.data.readers.base import job_input_contract

    data = spec.data
    contract = job_input_contract(data.benchmark, data.options, spec.model.backbone,
                                  labels["input_shape"])  # fmt: skip
    return labels | {"input": contract.to_json()}


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:08d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def save_checkpoint(
    run_dir: Path, module: TrainModule, optimizer: torch.optim.Optimizer | None,
    state: TrainState, spec_yaml: str, labels: dict, before_commit: Callable[[], None] | None = None,
) -> Path:  # fmt: skip
    run_dir = Path(run_dir)
    final = run_dir / checkpoint_name(state.step)
    tmp = run_dir / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    model = module.model  # a LoRA model: its adapters and new layers, with its base's fingerprint
    held = model.checkpoint_state() if hasattr(model, "checkpoint_state") else model.state_dict()
    meta = model.checkpoint_metadata() if hasattr(model, "checkpoint_metadata") else {}
    weights = {k: v.detach().contiguous().cpu() for k, v in held.items()}
    save_file(weights, tmp / "model.safetensors", metadata=meta or None)
    save_file(_tensors(module.method), tmp / "method.safetensors")
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    files = {
        "state.json": json.dumps(asdict(state) | {"progress": state.progress}, indent=1),
        "spec.yaml": spec_yaml,
        "labels.json": json.dumps(labels),
    }
    for name, text in files.items():
        (tmp / name).write_text(text)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if before_commit is not None:  # fault-injection point for tests: a kill here loses nothing
        before_commit()
    old = None
    if final.exists():  # the same step saved again (a resumed run): replace it whole, by
        old = run_dir / f".old-{final.name}-{uuid.uuid4().hex[:8]}"  # renames: never half of one
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync_dir(run_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def prune_checkpoints(run_dir: Path, keep: int, protect: tuple[int, ...] = ()) -> None:
    """Keep the newest ``keep`` checkpoints and those of the steps in ``protect`` (the best
    step under early stopping); remove the rest and any leftovers of killed writes."""
    for p in list_checkpoints(run_dir)[:-keep]:
        if checkpoint_step(p) not in protect:
            shutil.rmtree(p, ignore_errors=True)
    recover_replaced(run_dir)
    for pattern in (".tmp-checkpoint_*", ".old-checkpoint_*", ".checkpoint_*.download"):
        for p in Path(run_dir).glob(pattern):
            shutil.rmtree(p, ignore_errors=True)


def recover_replaced(run_dir: Path) -> None:
    """A kill between save_checkpoint's two renames leaves ``.old-checkpoint_N-*`` (complete)
    and no ``checkpoint_N``: put it back."""
    for old in Path(run_dir).glob(".old-checkpoint_*"):
        final = Path(run_dir) / old.name[len(".old-") :].rsplit("-", 1)[0]
        if CKPT_RE.match(final.name) and not final.exists():
            try:
                os.rename(old, final)
            except OSError:  # another rank on this node put it back first
                pass


def checkpoint_step(path: str | Path) -> int | None:
    m = CKPT_RE.match(Path(str(path).rstrip("/")).name)
    return int(m.group(1)) if m else None


def agree_on_resume(
    local_steps: list[int], reported_step: int | None, reduce_min: Callable[[int], int]
) -> int | None:
    """The step every rank resumes from (None: start fresh), decided together.

    A rank can load the complete checkpoints on its own node (``local_steps``) and the one Ray
    Train last registered (``reported_step``, the same on every rank; fetched from storage when
    it is not local). Nodes can hold different local ones: a copy fetched at an earlier restart,
    one written but not yet registered. Each rank offers the newest it can load and all take
    the minimum (``reduce_min``, an all-reduce); if a rank cannot load that one (another node
    wrote it), all fall back to the registered checkpoint, which every rank can fetch.
    """
    reported = -1 if reported_step is None else reported_step
    step = reduce_min(max([reported, *local_steps]))
    if step < 0:
        return None
    if reduce_min(int(step in local_steps or step == reported)) == 1:
        return step
    return None if reported < 0 else reported


def read_state(ckpt: Path) -> TrainState:
    raw = json.loads((Path(ckpt) / "state.json").read_text())
    raw.pop("progress", None)
    return TrainState(**raw)


def load_checkpoint(
    ckpt: Path, module: TrainModule, optimizer: torch.optim.Optimizer | None = None
) -> TrainState:
    ckpt = Path(ckpt)
    module.model.load_checkpoint_state(*read_weights(ckpt), where=str(ckpt))
    module.method.load_state_dict(load_file(ckpt / "method.safetensors"))
    if optimizer is not None and (ckpt / "optimizer.pt").is_file():
        # the state (momentum buffers, Adam moments) comes from the checkpoint; the settings
        # (momentum, betas, lr_scale, decay) stay as this spec built them, as the resume
        # warning says: load_state_dict would restore the old ones with the state
        built = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        for group, settings in zip(optimizer.param_groups, built, strict=True):
            group.update(settings)
    return read_state(ckpt)
