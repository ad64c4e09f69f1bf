"""train_loop_per_worker: the one training recipe, for every context.

The same function runs in-process (tests, benchmarks: call it with a config dict), on N Ray
Train workers (`shiftray.train.launch.fit`), inside a Tune trial, and as a RayJob entrypoint.

config keys: ``spec`` (JobSpec as a dict), ``run_dir`` (str), ``data`` (DomainData or a Ray
ObjectRef to one), ``ray`` (bool: report through ray.train).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from shiftray.config.load import dump_spec
from shiftray.config.schema import JobSpec
from shiftray.data.formats import DomainData
from shiftray.data.pairing import Pairing
from shiftray.data.transforms import build_augment
from shiftray.evaluate.metrics import evaluate
from shiftray.methods.base import ModelInfo
from shiftray.models.build import build_model
from shiftray.registry import METHODS
from shiftray.tracking import Tracker
from shiftray.train.checkpoint import (
    TrainState,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from shiftray.train.module import TrainModule
from shiftray.train.optim import build_optimizer, set_lr
from shiftray.train.step import train_step


@dataclass
class WorkerContext:
    rank: int
    world: int
    device: torch.device
    in_ray: bool

    @classmethod
    def current(cls, spec: JobSpec, in_ray: bool) -> WorkerContext:
        if dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        else:
            rank, world = 0, 1
        if in_ray:
            import ray.train.torch

            device = ray.train.torch.get_device()
        elif spec.resources.use_gpu and torch.cuda.is_available():
            device = torch.device("cuda")
        else:
            device = torch.device("cpu")
        return cls(rank, world, device, in_ray)


def _step_seed(seed: int, rank: int, step: int) -> int:
    """Per-step RNG seed: randomness (dropout) is a pure function of (seed, rank, step)."""
    return (seed * 1_000_003 + rank * 7_919 + step) % (2**63)


def param_digest(module: torch.nn.Module) -> dict[str, str]:
    return {
        name: hashlib.sha256(p.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        for name, p in module.named_parameters()
    }


def _report(ctx: WorkerContext, metrics: dict[str, Any], ckpt: Path | None) -> None:
    if not ctx.in_ray:
        return
    import ray.train

    checkpoint = ray.train.Checkpoint.from_directory(str(ckpt)) if ckpt is not None else None
    ray.train.report(
        metrics, checkpoint=checkpoint,
        checkpoint_upload_mode=ray.train.CheckpointUploadMode.NO_UPLOAD,
    )  # fmt: skip


def _resume_point(ctx: WorkerContext, run_dir: Path) -> Path | None:
    if ctx.in_ray:
        import ray.train

        reported = ray.train.get_checkpoint()
        if reported is not None and Path(reported.path).is_dir():
            newest = latest_checkpoint(run_dir)  # may be newer than the last registered one
            return newest if newest is not None else Path(reported.path)
    return latest_checkpoint(run_dir)


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    spec = JobSpec.model_validate(config["spec"])
    run_dir = Path(config["run_dir"])
    data = config["data"]
    if not isinstance(data, DomainData):
        import ray

        data = ray.get(data)
    ctx = WorkerContext.current(spec, bool(config.get("ray", False)))
    threads = spec.resources.torch_threads or (
        max(1, int(spec.resources.cpus_per_worker)) if ctx.in_ray else None
    )
    if threads:
        torch.set_num_threads(threads)
    tr = spec.train
    total = tr.steps

    torch.manual_seed(tr.seed)  # identical initial weights on every rank
    model = build_model(spec.model, data.input_shape, data.num_classes)
    method_cls = METHODS.get(spec.method.name)
    info = ModelInfo(model.feature_dim, data.num_classes, len(data.target))
    method = method_cls(spec.method.resolved_params(), info)
    module = TrainModule(model, method).to(ctx.device)
    optimizer = build_optimizer(module, spec)

    start, last_eval = 0, {}
    resume = _resume_point(ctx, run_dir)
    if resume is not None:
        state = load_checkpoint(resume, module, optimizer)
        start, last_eval = state.step, state.metrics
    trained: torch.nn.Module = module
    if ctx.world > 1:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        trained = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)

    local_batch = tr.batch_size // ctx.world
    aug = spec.finetune.augment
    if method.needs_strong and not aug.enabled:
        aug = aug.model_copy(update={"enabled": True})
    weak = build_augment("weak", data.input_shape, aug)
    strong = build_augment("strong", data.input_shape, aug) if method.needs_strong else None
    source = data.source if method.uses_source else None  # source-free: never read
    pairing = Pairing(
        source, data.target, local_batch, tr.seed, ctx.rank, ctx.world, weak, strong, aug.source
    )
    tracker = Tracker(spec, run_dir, start, enabled=ctx.rank == 0)
    spec_yaml = dump_spec(spec)
    labels = {"classes": data.classes, "input_shape": list(data.input_shape)}
    if ctx.rank == 0 and start == 0:
        (run_dir / "spec.yaml").write_text(spec_yaml)
        (run_dir / "labels.json").write_text(json.dumps(labels))

    sums: dict[str, float] = {}
    n_logged, t0, t_last = 0, time.perf_counter(), time.perf_counter()
    for step in range(start, total):
        progress = step / total
        lr = set_lr(optimizer, spec.optim, progress)
        if method.refresh_every and step % method.refresh_every == 0:
            method.refresh(model, data.target, ctx.device)  # e.g. SHOT's global pseudo-labels
        torch.manual_seed(_step_seed(tr.seed, ctx.rank, step))
        batch = pairing.batch(step).to(ctx.device)
        out = train_step(trained, optimizer, batch, progress, spec.optim.grad_clip, step)
        for k, v in {"loss": out.loss.detach(), **out.logs}.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n_logged += 1
        done = step + 1
        record: dict[str, Any] = {}
        if done % tr.log_every == 0 or done == total:
            now = time.perf_counter()
            record = {k: v / n_logged for k, v in sums.items()}
            record |= {"lr": lr, "steps_per_s": n_logged / max(now - t_last, 1e-9)}
            sums, n_logged, t_last = {}, 0, now
        is_eval = done % tr.eval_every == 0 or done == total
        is_ckpt = done % tr.checkpoint_every == 0 or done == total
        if is_eval or is_ckpt:
            if ctx.world > 1:  # BatchNorm running stats: evaluate rank 0's everywhere
                for buf in module.buffers():
                    dist.broadcast(buf, 0)
            if is_eval:
                res = evaluate(
                    module.model,
                    data.target_test,
                    tr.eval_batch_size,
                    ctx.device,
                    ctx.rank,
                    ctx.world,
                )
                last_eval = {
                    "target_acc": res.accuracy,
                    "target_loss": res.loss,
                    "eval_count": res.count,
                }
                record |= last_eval
        if record:
            record |= {
                "step": done,
                "progress": done / total,
                "elapsed_s": time.perf_counter() - t0,
            }
            tracker.log(record)
        if is_ckpt:
            ckpt = None
            if ctx.rank == 0:
                state = TrainState(done, total, tr.seed, metrics=last_eval)
                ckpt = save_checkpoint(run_dir, module, optimizer, state, spec_yaml, labels)
            _report(ctx, {"step": done, **last_eval}, ckpt)
            if ctx.rank == 0:
                prune_checkpoints(run_dir, tr.keep_checkpoints)
        elif is_eval:
            _report(ctx, {"step": done, **last_eval}, None)

    (run_dir / f"params_rank{ctx.rank}.json").write_text(json.dumps(param_digest(module)))
    result = {
        "step": total,
        **last_eval,
        "seconds": time.perf_counter() - t0,
        "resumed_from": start,
    }
    if ctx.rank == 0:
        tmp = run_dir / "result.json.tmp"
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, run_dir / "result.json")
    tracker.close()
    return result
