"""fit(spec): run the training loop on Ray Train workers (TorchTrainer), on an embedded or
existing Ray cluster.

The data is read on the driver first (a missing file fails before any worker starts), put in
the object store once, and read zero-copy by every worker. The run directory is Ray Train's
experiment directory (``<tracking.output_dir>/<name>``): checkpoints are written there by rank
0 and registered with Ray without a second copy; a rerun on the same directory resumes.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftray.config.schema import JobSpec
from shiftray.data.arrays import DomainData
from shiftray.data.batches.stream import data_config, load_stream_data, make_datasets
from shiftray.data.loading import load_job_data
from shiftray.errors import UserInputError
from shiftray.train.context import RayTrainReporter
from shiftray.train.hooks import LoopHook
from shiftray.train.loop import train_loop_per_worker
from shiftray.train.run import LoopConfig


def ray_env() -> None:
    """Defaults for a local, private Ray: no token auth prompt, no usage stats, and workers at
    normal priority.

    Ray starts its workers at niceness 15 (``worker_niceness``), so on a shared machine any
    ordinary process takes the CPU from them: a ``shiftray compare`` next to one busy process
    ran its tasks at 3% CPU each. Training workers are the job here, so the Ray this process
    starts runs them at niceness 0 (an existing cluster keeps its own setting).
    """
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


FORWARDED = ("SHIFTRAY_", "HF_", "TRANSFORMERS_", "WANDB_", "AWS_ENDPOINT_URL", "AWS_REGION",
             "AWS_DEFAULT_REGION", "TORCH_HOME", "TORCHINDUCTOR_")  # fmt: skip
SECRET = ("KEY", "SECRET", "TOKEN", "PASSWORD")


def forwarded_env() -> dict[str, str]:
    """The driver's settings the workers of an existing cluster need (a runtime_env reaches
    every worker process; the embedded Ray's workers inherit the driver's environment anyway):
    data directory, hub mode, W&B mode and project, S3 endpoint and region. Never secrets
    (``*KEY*``, ``*SECRET*``, ``*TOKEN*``, ``*PASSWORD*``): a runtime_env is visible on the
    dashboard, so credentials come from each node's own environment (a Kubernetes Secret)."""
    return {
        k: v
        for k, v in os.environ.items()
        if k.startswith(FORWARDED) and not any(w in k.upper() for w in SECRET)
    }


def ensure_ray(num_cpus: int | None = None, log_to_driver: bool = False) -> None:
    ray_env()
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        env = None
        if "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:  # not a submitted job (whose
            env = {"env_vars": forwarded_env()}  # runtime_env the workers already get)
        ray.init(address=address, log_to_driver=log_to_driver, runtime_env=env)
        return
    tmp = os.environ.get("SHIFTRAY_RAY_TMP", "/tmp/shiftray-ray")
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=log_to_driver,
        _temp_dir=tmp,
        configure_logging=False,
    )


def run_dir_for(spec: JobSpec) -> Path:
    return (Path(spec.tracking.output_dir).expanduser() / spec.name).resolve()


def _storage_keep(spec: JobSpec) -> int | None:
    """Checkpoints kept in ``storage_path``: as many as the run directory keeps (locally the
    loop prunes), or all when early stopping may restore a best step older than those."""
    es = spec.finetune.early_stopping
    if spec.tracking.storage_path is None or (es is not None and es.restore_best):
        return None
    return spec.train.keep_checkpoints


def _user_error(error: BaseException) -> UserInputError | None:
    """A worker's error about the user's input (a source run for another domain, too few rows
    for the batch), unwrapped from Ray's WorkerGroupError so the CLI prints it as one line."""
    failures = getattr(error, "worker_failures", None) or {}
    for failure in failures.values():
        if isinstance(failure, UserInputError):
            return failure
    return None


@dataclass
class FitResult:
    run_dir: Path
    metrics: dict[str, Any]
    seconds: float


def job_data(spec: JobSpec) -> DomainData:
    """The data a job trains on, read on the driver (so a missing file fails before any worker
    starts). Streamed jobs: only the shards' footers and the target test split are read here;
    the training splits stay on disk until the workers stream them."""
    if spec.data.stream.enabled:
        return load_stream_data(spec)[0]
    return load_job_data(spec)


def _job_data(spec: JobSpec, data: DomainData | None) -> tuple[DomainData, dict[str, Any] | None]:
    """The job's data, and for streamed jobs the Ray datasets of the streamed domains."""
    data = data if data is not None else job_data(spec)
    if data.stream is None:
        return data, None
    ensure_ray()
    return data, make_datasets(data.stream.paths)


def _warn_if_no_cpu_for_reads(training_cpus: float) -> None:
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    if total - training_cpus < 1:
        print(
            f"warning: data.stream.enabled, but the training workers take {training_cpus:g} of the "
            f"cluster's {total:g} CPUs: Ray Data's read tasks need at least one more, or the run "
            "waits for them forever (add CPUs, or lower resources.cpus_per_worker)",
            file=sys.stderr,
        )


def _warn_if_nodes_share_no_storage(spec: JobSpec, run_dir: Path) -> None:
    import ray

    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    if nodes > 1 and spec.tracking.storage_path is None:
        print(
            f"warning: the Ray cluster has {nodes} nodes and tracking.storage_path is unset: rank "
            f"0 writes checkpoints and results to {run_dir} on its own node, and a worker "
            "restarted on another node cannot load them unless every node mounts that "
            "directory; set tracking.storage_path (s3://BUCKET/dir, gs://..., or a shared mount)",
            file=sys.stderr,
        )


def _run_config(spec: JobSpec, run_dir: Path, max_failures: int | None, callbacks: tuple):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    return RunConfig(
        name=spec.name,
        storage_path=spec.tracking.storage_path or str(run_dir.parent),
        checkpoint_config=CheckpointConfig(num_to_keep=_storage_keep(spec)),
        failure_config=FailureConfig(
            max_failures=spec.resources.max_failures if max_failures is None else max_failures
        ),
        callbacks=list(callbacks) or None,
    )


def fit(
    spec: JobSpec, data: DomainData | None = None, max_failures: int | None = None,
    hooks: tuple[LoopHook, ...] = (), fresh: bool = False, callbacks: tuple = (),
) -> FitResult:  # fmt: skip
    """Train ``spec`` on ``spec.resources.num_workers`` Ray Train workers. ``hooks`` watch or
    disturb the loop (tests: `shiftray.train.hooks`); ``fresh`` (``--restart``): no worker
    resumes from checkpoints of an earlier run left on its node; ``callbacks``: Ray Train
    run callbacks (a Tune trial's ``TuneReportCallback``)."""
    t0 = time.perf_counter()
    data, datasets = _job_data(spec, data)
    run_dir = run_dir_for(spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    ensure_ray()
    import ray
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    res = spec.resources
    if datasets:
        _warn_if_no_cpu_for_reads(res.num_workers * res.cpus_per_worker)
    _warn_if_nodes_share_no_storage(spec, run_dir)
    backend = res.backend if res.backend != "auto" else ("nccl" if res.use_gpu else "gloo")
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "loop": LoopConfig(
                spec,
                run_dir,
                ray.put(data),
                reporter=RayTrainReporter(upload=spec.tracking.storage_path is not None),
                fresh=fresh,
                hooks=tuple(hooks),
            )  # fmt: skip
        },
        datasets=datasets,
        dataset_config=data_config() if datasets else None,
        scaling_config=ScalingConfig(
            num_workers=res.num_workers,
            use_gpu=res.use_gpu,
            resources_per_worker={"CPU": res.cpus_per_worker},
        ),
        torch_config=TorchConfig(backend=backend),
        run_config=_run_config(spec, run_dir, max_failures, callbacks),
    )
    try:
        result = trainer.fit()
    except ray.train.WorkerGroupError as e:
        if (user := _user_error(e)) is None:
            raise
        raise user from None
    if result.error is not None:
        raise _user_error(result.error) or result.error
    metrics = dict(result.metrics or {})
    return FitResult(run_dir, metrics, time.perf_counter() - t0)


def fit_local(
    spec: JobSpec, data: DomainData | None = None, hooks: tuple[LoopHook, ...] = (),
    fresh: bool = False,
) -> FitResult:  # fmt: skip
    """The same loop in this process, without Ray (one worker): for debugging and benchmarks."""
    t0 = time.perf_counter()
    data, datasets = _job_data(spec, data)
    run_dir = run_dir_for(spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = LoopConfig(spec, run_dir, data, datasets=datasets, hooks=tuple(hooks), fresh=fresh)
    metrics = train_loop_per_worker(cfg)
    return FitResult(run_dir, metrics, time.perf_counter() - t0)
