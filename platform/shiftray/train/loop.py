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
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from shiftray.config.load import dump_spec, spec_changes
from shiftray.config.schema import JobSpec
from shiftray.data.formats import DomainData
from shiftray.data.pairing import Pairing
from shiftray.data.streaming import StreamPairing
from shiftray.data.transforms import build_augment
from shiftray.evaluate.metrics import evaluate
from shiftray.evaluate.validators import EarlyStopper, unsupervised_scores
from shiftray.finetune.regularizers import L2SP
from shiftray.finetune.schedule import stage_index
from shiftray.methods.base import ModelInfo
from shiftray.models.build import build_model
from shiftray.registry import METHODS
from shiftray.tracking import Tracker
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
from shiftray.train.features import cache_features
from shiftray.train.module import TrainModule
from shiftray.train.optim import build_optimizer, set_lr
from shiftray.train.step import StepConfig, compile_network, train_step
from shiftray.train.storage import upload_run_files


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
        elif spec.resources.use_gpu and torch.cuda.is_available():  # torchrun sets LOCAL_RANK
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
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


def _report(ctx: WorkerContext, metrics: dict[str, Any], ckpt: Path | None, upload: bool) -> None:
    """Register a checkpoint with Ray Train. Without ``tracking.storage_path`` the run directory
    is Ray's storage and the complete checkpoint directory is registered in place; with it, Ray
    copies the directory to the storage URI (pyarrow.fs) and registers it only once the copy is
    complete, so a half-uploaded checkpoint is never the one a restart loads."""
    if not ctx.in_ray:
        return
    import ray.train

    mode = ray.train.CheckpointUploadMode
    checkpoint = ray.train.Checkpoint.from_directory(str(ckpt)) if ckpt is not None else None
    ray.train.report(
        metrics, checkpoint=checkpoint, checkpoint_dir_name=ckpt.name if ckpt else None,
        checkpoint_upload_mode=mode.SYNC if upload else mode.NO_UPLOAD,
        delete_local_checkpoint_after_upload=False if upload else None,
    )  # fmt: skip


def _resume_point(ctx: WorkerContext, run_dir: Path, fresh: bool = False) -> Path | None:
    """The checkpoint to resume from, the same step on every rank (`agree_on_resume`).
    ``fresh`` (``shiftray run --restart``): until Ray has registered a checkpoint of this run,
    the checkpoints of an earlier run left in this node's run directory are deleted, not
    resumed from (the driver deleted its own; a worker on another node keeps its copies)."""
    reported = None
    if ctx.in_ray:
        import ray.train

        reported = ray.train.get_checkpoint()
    if fresh and reported is None:
        for old in list_checkpoints(run_dir):
            shutil.rmtree(old, ignore_errors=True)
    recover_replaced(run_dir)
    local = {checkpoint_step(p): p for p in list_checkpoints(run_dir)}
    reported_step = checkpoint_step(reported.path) if reported is not None else None
    step = agree_on_resume(list(local), reported_step, partial(_all_min, ctx))
    if step is None:
        return None
    if step in local:
        return local[step]
    path = run_dir / checkpoint_name(step)  # not on this node: fetch it from storage
    tmp = run_dir / f".{path.name}.rank{ctx.rank}.download"
    reported.to_directory(str(tmp))
    try:
        os.replace(tmp, path)  # complete, or not there at all
    except OSError:  # another rank on this node got it there first
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _all_min(ctx: WorkerContext, value: int) -> int:
    if ctx.world == 1 or not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=ctx.device)  # NCCL: device tensors
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def _fault_hook(config: dict[str, Any], rank: int, where: str):
    """Tests inject faults through ``config["inject_fault"]`` = {rank, step, where: step |
    checkpoint, marker}: the process SIGKILLs itself once (the marker file remembers)."""
    fault = config.get("inject_fault")
    if not fault or fault.get("rank", 0) != rank or fault.get("where", "step") != where:
        return lambda step: None

    def hook(step: int) -> None:
        marker = Path(fault["marker"])
        if step == fault["step"] and not marker.exists():
            marker.write_text(str(step))
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _shards(config: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
    """This worker's Ray Data iterators per streamed domain (Ray Train splits them; in-process,
    one worker reads the whole datasets passed as ``config["datasets"]``)."""
    names = config["stream_domains"]
    if ctx.in_ray:
        import ray.train

        return {n: ray.train.get_dataset_shard(n) for n in names}
    return {n: config["datasets"][n].iterator() for n in names}


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    spec = JobSpec.model_validate(config["spec"])
    run_dir = Path(config["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    data = config["data"]
    if not isinstance(data, DomainData):
        import ray

        data = ray.get(data)
    ctx = WorkerContext.current(spec, bool(config.get("ray", False)))
    threads = spec.resources.torch_threads
    if threads is None and ctx.in_ray:
        threads = max(1, int(spec.resources.cpus_per_worker))
    if threads:
        torch.set_num_threads(threads)
    tr, ft = spec.train, spec.finetune
    total = tr.steps

    # --- setup: model, method, optimizer (identical initial weights on every rank) ---
    torch.manual_seed(tr.seed)
    model = build_model(spec.model, data.input_shape, data.num_classes)
    stream = data.extra.get("stream")  # StreamInfo when the training splits are streamed
    num_target = stream.target_rows if stream is not None else len(data.target)
    info = ModelInfo(model.feature_dim, data.num_classes, num_target)
    method = METHODS.get(spec.method.name)(spec.method.resolved_params(), info)
    regularizer = None
    if ft.l2sp_alpha > 0 or ft.l2sp_beta > 0:
        new = list(model.bottleneck.parameters()) + list(model.head.parameters())
        regularizer = L2SP(model.backbone, new, ft.l2sp_alpha, ft.l2sp_beta).to_device(ctx.device)
    module = TrainModule(model, method, regularizer).to(ctx.device)
    aug = spec.finetune.augment
    if method.needs_strong and not aug.enabled:
        aug = aug.model_copy(update={"enabled": True})
    if ft.strategy == "feature-extraction":
        model.freeze_backbone()  # before DDP: its parameter set is fixed from here on
        if ft.cache_features and not aug.enabled and stream is None:
            data = cache_features(model, data, tr.eval_batch_size, ctx.device)
    optimizer = build_optimizer(module, spec)
    stopper = None
    if ft.early_stopping is not None:
        es = ft.early_stopping
        stopper = EarlyStopper(es.metric, es.patience, es.min_delta)

    # --- resume from the newest complete checkpoint, if any ---
    start, last_eval, stopped, window = 0, {}, False, {}
    resume = _resume_point(ctx, run_dir, bool(config.get("fresh", False)))
    if resume is not None:
        state = load_checkpoint(resume, module, optimizer)
        start, last_eval = state.step, state.metrics
        trained_with = yaml.safe_load((resume / "spec.yaml").read_text())
        changed = spec_changes(trained_with, spec.model_dump(mode="json"))
        if changed and ctx.rank == 0:
            print(
                f"warning: {resume} was trained with another spec; resuming with this one, so "
                "the run will not equal an uninterrupted run of either:\n  " + "\n  ".join(changed),
                file=sys.stderr,
            )
        if stopper is not None and "early_stopping" in state.extra:
            stopper.load(state.extra["early_stopping"])
        stopped = bool(state.extra.get("stopped_early"))  # it ended there: nothing left to train
        window = state.extra.get("log_window", {})
    step_cfg = StepConfig.from_spec(spec, ctx.device, image_model=len(data.input_shape) == 3)
    if step_cfg.channels_last:
        module = module.to(memory_format=torch.channels_last)
        model.channels_last = True  # and its inputs, wherever they come from
    if spec.train.compile == "on" or (spec.train.compile == "auto" and ctx.device.type == "cuda"):
        compile_network(model)
    trained: torch.nn.Module = module
    if ctx.world > 1:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        trained = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)

    # --- data: this worker's shard of both domains, as pure functions of the step ---
    weak = build_augment("weak", data.input_shape, aug)
    strong = build_augment("strong", data.input_shape, aug) if method.needs_strong else None
    source = data.source if method.uses_source else None  # source-free: never read
    local_batch = tr.batch_size // ctx.world
    if stream is None:
        pairing = Pairing(
            source, data.target, local_batch, tr.seed, ctx.rank, ctx.world, weak, strong, aug.source
        )
    else:
        st = spec.data.stream
        pairing = StreamPairing(
            _shards(config, ctx), stream, local_batch, tr.seed, ctx.rank, ctx.world,
            st.shuffle_buffer, st.prefetch_batches, st.decode_threads, ctx.device, weak, strong,
            aug.source, steps=total, read_ahead=st.read_ahead,
        )  # fmt: skip
    tracker = Tracker(spec, run_dir, start, enabled=ctx.rank == 0)
    spec_yaml = dump_spec(spec)
    labels = {"classes": data.classes, "input_shape": list(data.input_shape)}
    if ctx.rank == 0 and start == 0:
        (run_dir / "spec.yaml").write_text(spec_yaml)
        (run_dir / "labels.json").write_text(json.dumps(labels))

    upload = bool(config.get("upload_checkpoints", False))
    fault_step = _fault_hook(config, ctx.rank, "step")
    fault_ckpt = _fault_hook(config, ctx.rank, "checkpoint")

    # --- train ---
    # the running means logged every log_every steps (a checkpoint between two logs keeps them)
    sums: dict[str, float] = dict(window.get("sums", {}))
    n_logged, n_timed = int(window.get("n", 0)), 0  # steps in the means, steps timed here
    t0 = t_last = time.perf_counter()
    done = start
    try:  # the stream's reader thread stops whatever ends the loop
        for step in range(start, start if stopped else total):
            progress = step / total
            lr = set_lr(optimizer, spec, progress)
            if method.refresh_every and step % method.refresh_every == 0:
                method.refresh(model, data.target, ctx.device)  # e.g. SHOT's global pseudo-labels
            torch.manual_seed(_step_seed(tr.seed, ctx.rank, step))
            batch = pairing.batch(step).to(ctx.device, step_cfg.channels_last)
            out = train_step(trained, optimizer, batch, progress, step_cfg, step)
            for k, v in {"loss": out.loss.detach(), **out.logs}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n_logged, n_timed = n_logged + 1, n_timed + 1
            done = step + 1
            fault_step(done)
            record: dict[str, Any] = {}
            if done % tr.log_every == 0 or done == total:
                now = time.perf_counter()
                record = {k: v / n_logged for k, v in sums.items()}
                record |= {"lr": lr, "steps_per_s": n_timed / max(now - t_last, 1e-9)}
                sums, n_logged, n_timed, t_last = {}, 0, 0, now
            is_eval = done % tr.eval_every == 0 or done == total
            is_ckpt = done % tr.checkpoint_every == 0 or done == total
            if is_eval:
                if ctx.world > 1:  # BatchNorm running stats: evaluate rank 0's everywhere
                    for buf in module.buffers():
                        dist.broadcast(buf, 0)
                label_free = tr.label_free_scores or (
                    stopper is not None and stopper.metric.startswith("target_")
                )
                last_eval = evaluate_all(
                    module.model, data, tr.eval_batch_size, ctx, label_free, step_cfg.autocast_dtype
                )
                record |= last_eval
                if stopper is not None and stopper.update(last_eval[stopper.metric], done):
                    stopped = is_ckpt = (
                        True  # the same decision on every rank (all-reduced metrics)
                    )
                    record["early_stop"] = True
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
                    extra = {"unfreeze_stage": stage_index(ft, progress),
                             "log_window": {"sums": sums, "n": n_logged}}  # fmt: skip
                    if stopper is not None:
                        extra["early_stopping"] = stopper.state()
                        extra["stopped_early"] = stopped
                    state = TrainState(done, total, tr.seed, metrics=last_eval, extra=extra)
                    ckpt = save_checkpoint(
                        run_dir,
                        module,
                        optimizer,
                        state,
                        spec_yaml,
                        labels,
                        partial(fault_ckpt, done),
                    )
                _report(ctx, {"step": done, **last_eval}, ckpt, upload)
                if ctx.rank == 0:
                    prune_checkpoints(run_dir, tr.keep_checkpoints)
            elif is_eval:
                _report(ctx, {"step": done, **last_eval}, None, upload)
            if stopped:
                break
    finally:
        pairing.close()
    (run_dir / f"params_rank{ctx.rank}.json").write_text(json.dumps(param_digest(module)))
    if ctx.in_ray:  # where each rank ran (multi-node runs)
        import ray

        (run_dir / f"node_rank{ctx.rank}.txt").write_text(ray.get_runtime_context().get_node_id())
    result = {"step": done, **last_eval, "seconds": time.perf_counter() - t0, "resumed_from": start}
    if stopper is not None:
        result |= {
            "stopped_early": stopped,
            "best_step": stopper.best_step,
            "best_value": stopper.best,
        }
    if ctx.rank == 0:
        tmp = run_dir / "result.json.tmp"
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, run_dir / "result.json")
    tracker.close()
    if ctx.rank == 0 and ctx.in_ray and spec.tracking.storage_path is not None:
        upload_run_files(spec, run_dir)
    return result


def evaluate_all(
    model, data: DomainData, batch_size: int, ctx: WorkerContext, label_free: bool,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:  # fmt: skip
    """Target test accuracy (labels used for reporting only; skipped when the target has none),
    source validation accuracy when held out, and (``label_free``, or no target labels)
    label-free scores on the unlabelled target set. Under the training step's autocast dtype
    (bf16 on GPUs by default); losses and probabilities are computed in fp32."""
    if autocast_dtype is not None:
        with torch.autocast(ctx.device.type, dtype=autocast_dtype):
            return evaluate_all(model, data, batch_size, ctx, label_free)
    args = (batch_size, ctx.device, ctx.rank, ctx.world)
    out = {}
    if data.target_test.y is not None:
        res = evaluate(model, data.target_test, *args)
        out = {"target_acc": res.accuracy, "target_loss": res.loss, "eval_count": res.count}
    if "source_val" in data.extra:
        out["source_val_acc"] = evaluate(model, data.extra["source_val"], *args).accuracy
    if label_free or data.target_test.y is None:  # no target labels: the label-free scores
        unlabelled = data.target if len(data.target) else data.target_test.without_labels()
        out |= unsupervised_scores(model, unlabelled, *args)
    return out
