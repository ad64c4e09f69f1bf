"""train_loop_per_worker: the one training recipe, for every context.

    setup -> resume -> train (step, then log / evaluate / checkpoint) -> finish

The same function runs in-process (tests, benchmarks, ``--no-ray``: call it with a
`LoopConfig`), on N Ray Train workers (`shiftray.train.launch.fit` passes
``{"loop": LoopConfig}``), inside a Tune trial, and as a RayJob entrypoint. What differs
between those contexts is behind `LoopConfig.reporter`; what tests watch is behind its hooks.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from shiftray.config.load import spec_changes
from shiftray.data.arrays import DomainArrays
from shiftray.evaluate.evaluation import Evaluation, evaluate_all
from shiftray.evaluate.health import check_health
from shiftray.evaluate.metrics import evaluate as evaluate_split
from shiftray.evaluate.shift import save_reference, target_reference
from shiftray.finetune.freeze import apply_freezing
from shiftray.finetune.lora import trainable_counts
from shiftray.finetune.schedule import stage_index
from shiftray.tracking import Tracker
from shiftray.train.checkpoint import TrainState, checkpoint_labels
from shiftray.train.optim import set_lr
from shiftray.train.run import LoopConfig, Run, setup
from shiftray.train.step import train_step
from shiftray.train.storage import upload_run_files


def train_loop_per_worker(config: LoopConfig | dict[str, Any]) -> dict[str, Any]:
    run = setup(LoopConfig.of(config))
    run.labels = checkpoint_labels(run.labels, run.spec)  # with the input contract serving reads
    resume(run)
    tracker = Tracker(run.spec, run.cfg.run_dir, run.start, enabled=run.ctx.rank == 0)
    if run.ctx.rank == 0 and run.start == 0:
        (run.cfg.run_dir / "spec.yaml").write_text(run.spec_yaml)
        (run.cfg.run_dir / "labels.json").write_text(json.dumps(run.labels))
    try:  # the stream's reader thread stops whatever ends the loop
        train(run, tracker)
    finally:
        run.batches.close()
    result = finish(run)
    tracker.close()
    return result


def _step_seed(seed: int, rank: int, step: int) -> int:
    """Per-step RNG seed: randomness (dropout) is a pure function of (seed, rank, step)."""
    return (seed * 1_000_003 + rank * 7_919 + step) % (2**63)


def resume(run: Run) -> None:
    """Continue from the newest checkpoint every rank can load, if any."""
    ckpt = run.checkpointer.resume_point(run.cfg.fresh)
    if ckpt is None:
        return
    state = run.checkpointer.load(ckpt, run.module, run.optimizer)
    run.start = run.done = state.step
    run.last_eval = Evaluation.restore(state.metrics, state.extra.get("evaluation"))
    trained_with = yaml.safe_load((ckpt / "spec.yaml").read_text())
    changed = spec_changes(trained_with, run.spec.model_dump(mode="json"))
    if changed and run.ctx.rank == 0:
        print(
            f"warning: {ckpt} was trained with another spec; resuming with this one, so the run "
            "will not equal an uninterrupted run of either:\n  " + "\n  ".join(changed),
            file=sys.stderr,
        )
    if run.stopper is not None and "early_stopping" in state.extra:
        run.stopper.load(state.extra["early_stopping"])
        run.checkpointer.protect = (run.stopper.best_step,)
    run.stopped = bool(state.extra.get("stopped_early"))  # it ended there: nothing left
    run.window.load(state.extra.get("log_window", {}))


def _wrap(run: Run) -> None:
    """The module to train: itself, or under DDP (re-built when the frozen set changes: DDP
    fixes the parameters it reduces when built). The old wrapper goes first, with its
    reducer's gradient hooks, before a new one registers its own."""
    if isinstance(run.trained, torch.nn.parallel.DistributedDataParallel):
        run.trained = None
        gc.collect()
    run.trained = run.module
    if run.ctx.world > 1 and any(p.requires_grad for p in run.module.parameters()):
        ids = [run.ctx.device.index] if run.ctx.device.type == "cuda" else None
        run.trained = torch.nn.parallel.DistributedDataParallel(run.module, device_ids=ids)


def train(run: Run, tracker: Tracker) -> None:
    tr, ctx = run.spec.train, run.ctx
    for step in range(run.start, run.start if run.stopped else run.total):
        progress = step / run.total
        lr = set_lr(run.optimizer, run.spec, progress)
        if apply_freezing(run.optimizer) or run.trained is None:
            _wrap(run)
        if run.method.refresh_every and step % run.method.refresh_every == 0:
            run.method.refresh(run.model, run.data.target, ctx.device)  # e.g. SHOT's labels
        torch.manual_seed(_step_seed(tr.seed, ctx.rank, step))
        batch = run.batches.batch(step).to(ctx.device, run.step_cfg.channels_last)
        out = train_step(run.trained, run.optimizer, batch, progress, run.step_cfg, step)
        run.window.add(out)
        run.done = step + 1
        for hook in run.cfg.hooks:
            hook.after_step(ctx, run.done)
        after_step(run, tracker, lr)
        if run.stopped:
            break


def after_step(run: Run, tracker: Tracker, lr: float) -> None:
    """Log every ``log_every`` steps, evaluate every ``eval_every``, checkpoint every
    ``checkpoint_every`` (and at the end, at an early stop, and at each new best step)."""
    tr, done = run.spec.train, run.done
    last = done == run.total
    record = run.window.flush(lr) if done % tr.log_every == 0 or last else {}
    is_eval = done % tr.eval_every == 0 or last
    is_ckpt = done % tr.checkpoint_every == 0 or last
    if is_eval:
        improved = run_evaluation(run)
        record |= run.last_eval.metrics | ({"early_stop": True} if run.stopped else {})
        is_ckpt = is_ckpt or run.stopped or improved
    elapsed = time.perf_counter() - run.t0  # seconds in this process since set-up
    if record:
        tracker.log(record | {"step": done, "progress": done / run.total, "elapsed_s": elapsed})
    timing = {"loop_s": elapsed}
    if is_ckpt:
        run.checkpointer.save(run.module, run.optimizer, _state(run), run.spec_yaml, run.labels,
                              timing)  # fmt: skip
    elif is_eval:
        run.checkpointer.report({"step": done, **run.last_eval.metrics, **timing})


def run_evaluation(run: Run) -> bool:
    """Evaluate (all ranks together); update early stopping. True at a new best step whose
    checkpoint restore_best will need."""
    if run.ctx.world > 1:  # BatchNorm running stats: evaluate rank 0's everywhere
        for buf in run.module.buffers():
            dist.broadcast(buf, 0)
    stopper, tr = run.stopper, run.spec.train
    label_free = tr.label_free_scores or (
        stopper is not None and stopper.metric.startswith("target_")
    )
    ctx = run.ctx
    run.last_eval = evaluate_all(run.model, run.data, tr.eval_batch_size, ctx.device, ctx.rank,
                                 ctx.world, label_free, run.step_cfg.autocast_dtype,
                                 tuple(tr.validators), tr.validator_rows)  # fmt: skip
    if stopper is None:
        return False
    best_before = stopper.best_step
    run.stopped = stopper.update(run.last_eval.metrics[stopper.metric], run.done)  # all-reduced:
    run.checkpointer.protect = (stopper.best_step,)  # the same decision on every rank
    return stopper.best_step != best_before and _restores_best(run)


def _restores_best(run: Run) -> bool:
    es = run.spec.finetune.early_stopping
    return es is not None and es.restore_best


def _state(run: Run) -> TrainState:
    progress = run.done / run.total
    extra: dict[str, Any] = {
        "unfreeze_stage": stage_index(run.spec.finetune, progress),
        "log_window": run.window.state(),
        "evaluation": run.last_eval.detail(),
    }
    if run.stopper is not None:
        extra |= {"early_stopping": run.stopper.state(), "stopped_early": run.stopped}
    tr = run.spec.train
    return TrainState(run.done, tr.steps, tr.seed, metrics=run.last_eval.metrics, extra=extra)


def finish(run: Run) -> dict[str, Any]:
    """The final model (the best step's, when early stopping restores it), result.json."""
    ctx, run_dir = run.ctx, Path(run.cfg.run_dir)
    final, model_step = run.last_eval, run.done
    best = run.stopper.best_step if run.stopper is not None else 0
    if _restores_best(run) and best not in (0, run.done):
        restored = _restore(run, best)
        if restored is not None:
            final, model_step = restored, best
            run.checkpointer.report({"step": run.done, **final.metrics, "model_step": best})
        elif ctx.rank == 0:
            print(f"warning: checkpoint_{best:08d} is not in {run_dir}: the final model is "
                  f"step {run.done}'s, not the best step's", file=sys.stderr)  # fmt: skip
    for hook in run.cfg.hooks:
        hook.at_end(ctx, run_dir, run.module)
    if ctx.rank == 0:
        _save_shift_reference(run, run_dir / f"checkpoint_{model_step:08d}")
    result = {"step": run.done, **final.metrics, "model_step": model_step,
              "seconds": time.perf_counter() - run.t0, "resumed_from": run.start}  # fmt: skip
    result["trainable_params"], result["total_params"] = trainable_counts(run.module.model)
    if final.per_class is not None:
        result["target_per_class"] = dict(zip(run.data.classes, final.per_class, strict=True))
    health = check_health(run.data.num_classes, final.predicted, final.actual, _source_acc(run))
    result["health"] = health.flags
    if health.messages and ctx.rank == 0:
        print(
            "\n".join(f"WARNING ({run.spec.name}): {m}" for m in health.messages), file=sys.stderr
        )
    if run.stopper is not None:
        result |= {"stopped_early": run.stopped, "best_step": run.stopper.best_step,
                   "best_value": run.stopper.best}  # fmt: skip
    if ctx.rank == 0:
        tmp = run_dir / "result.json.tmp"
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, run_dir / "result.json")
        if run.cfg.reporter.in_ray and run.spec.tracking.storage_path:
            upload_run_files(run.spec, run_dir)
    return result


def _save_shift_reference(run: Run, ckpt: Path) -> None:
    """Target-feature statistics of the final model beside it (serving's shift signal):
    from the unlabelled target training rows, or, for a streamed job (whose training rows are
    in shards), the target test split's inputs (its labels are not read)."""
    target = run.data.target if len(run.data.target) else run.data.target_test.without_labels()
    if not ckpt.is_dir():
        return
    ref = target_reference(run.model, target.x, run.spec.train.eval_batch_size, run.ctx.device,
                           seed=run.spec.train.seed)  # fmt: skip
    if ref is not None:
        save_reference(ref, ckpt)


def _source_acc(run: Run) -> float | None:
    """Accuracy on (up to 4,096 of) the labelled source training rows, all ranks together;
    None when the source is streamed or not read (source-free)."""
    src = run.data.source
    if src is None or not run.method.uses_source or src.y is None or len(src) == 0:
        return None
    n = min(len(src), 4096)
    sample = DomainArrays(src.x[:n], src.y[:n], src.domain, src.split)
    ctx = run.ctx
    return evaluate_split(run.model, sample, run.spec.train.eval_batch_size, ctx.device, ctx.rank,
                    ctx.world).accuracy  # fmt: skip


def _restore(run: Run, step: int) -> Evaluation | None:
    """Load the best step's weights (its checkpoint is never pruned) on rank 0 and broadcast
    them, so every rank ends with the same model; None (nothing restored, on every rank) when
    rank 0's run directory does not hold that checkpoint (a restart on another node)."""
    from shiftray.models.load import read_weights

    ckpt = Path(run.cfg.run_dir) / f"checkpoint_{step:08d}"
    found = run.ctx.rank != 0 or ckpt.is_dir()
    if not run.ctx.all_min(int(found)):
        return None
    state = None
    if run.ctx.rank == 0:
        state = json.loads((ckpt / "state.json").read_text())
        run.module.model.load_checkpoint_state(*read_weights(ckpt, run.ctx.device), where=str(ckpt))
    if run.ctx.world > 1:
        for tensor in run.module.model.state_dict().values():
            dist.broadcast(tensor, 0)
    if state is None:  # not rank 0: its result is not written
        return run.last_eval
    return Evaluation.restore(state["metrics"], state["extra"].get("evaluation"))
