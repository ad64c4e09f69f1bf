"""What the training loop works with: its typed input (`LoopConfig`) and the state of one
worker's run (`Run`), built by `setup`.

`setup` makes everything the recipe needs, in an order that keeps the initial weights identical
on every rank and across resumes (the seed, then model, method and regularizer draw from it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shiftray.config.load import dump_spec
from shiftray.config.schema import AugmentSpec, JobSpec
from shiftray.data.arrays import DomainData
from shiftray.data.batches import BatchSource, Worker, make_batch_source
from shiftray.data.transforms import build_augment
from shiftray.evaluate.evaluation import Evaluation
from shiftray.evaluate.validators import EarlyStopper
from shiftray.finetune.regularizers import L2SP
from shiftray.methods.base import AdaptationMethod, ModelInfo, StepOutput
from shiftray.models.build import AdaptModel, job_model
from shiftray.models.load import RunIdentity
from shiftray.registry import METHODS
from shiftray.train.checkpointer import Checkpointer
from shiftray.train.context import LocalReporter, Reporter, WorkerContext
from shiftray.train.features import cache_features
from shiftray.train.hooks import LoopHook
from shiftray.train.module import TrainModule
from shiftray.train.optim import build_optimizer
from shiftray.train.step import StepConfig, compile_network


@dataclass
class LoopConfig:
    """The loop's input. ``data`` is the job's data or a Ray ObjectRef to it (read zero-copy
    from the object store); ``datasets`` are the streamed domains' Ray datasets when the loop
    runs in-process (Ray Train hands each worker its shard instead); ``fresh``: ``--restart``
    (see `Checkpointer.resume_point`); ``hooks``: what tests install (`shiftray.train.hooks`)."""

    spec: JobSpec
    run_dir: Path
    data: Any
    reporter: Reporter = field(default_factory=LocalReporter)
    datasets: dict[str, Any] | None = None
    fresh: bool = False
    hooks: tuple[LoopHook, ...] = ()

    @classmethod
    def of(cls, config: LoopConfig | dict[str, Any]) -> LoopConfig:
        """Ray Train passes ``train_loop_config`` as a dict: ``{"loop": LoopConfig}``."""
        return config if isinstance(config, LoopConfig) else config["loop"]


@dataclass
class LogWindow:
    """Running means of the step logs between two log lines (kept through a checkpoint)."""

    sums: dict[str, float] = field(default_factory=dict)
    n: int = 0  # steps in the means
    timed: int = 0  # of those, steps timed in this process
    t_last: float = field(default_factory=time.perf_counter)

    def add(self, out: StepOutput) -> None:
        for k, v in {"loss": out.loss.detach(), **out.logs}.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.n, self.timed = self.n + 1, self.timed + 1

    def flush(self, lr: float) -> dict[str, float]:
        now = time.perf_counter()
        record = {k: v / self.n for k, v in self.sums.items()}
        record |= {"lr": lr, "steps_per_s": self.timed / max(now - self.t_last, 1e-9)}
        self.sums, self.n, self.timed, self.t_last = {}, 0, 0, now
        return record

    def state(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "n": self.n}

    def load(self, state: dict[str, Any]) -> None:
        self.sums, self.n = dict(state.get("sums", {})), int(state.get("n", 0))


@dataclass
class Run:
    """One worker's run: the pieces `setup` built and the progress the recipe makes."""

    cfg: LoopConfig
    spec: JobSpec
    ctx: WorkerContext
    data: DomainData
    model: AdaptModel
    method: AdaptationMethod
    module: TrainModule
    optimizer: torch.optim.Optimizer
    step_cfg: StepConfig
    batches: BatchSource
    checkpointer: Checkpointer
    stopper: EarlyStopper | None
    spec_yaml: str
    labels: dict[str, Any]
    trained: torch.nn.Module | None = None  # the module, or its DDP wrapper
    start: int = 0  # the step resumed from
    done: int = 0  # steps done
    stopped: bool = False  # early stopping ended the run
    last_eval: Evaluation = field(default_factory=Evaluation)
    window: LogWindow = field(default_factory=LogWindow)
    t0: float = field(default_factory=time.perf_counter)

    @property
    def total(self) -> int:
        return self.spec.train.steps


def _data(cfg: LoopConfig) -> DomainData:
    if isinstance(cfg.data, DomainData):
        return cfg.data
    import ray

    return ray.get(cfg.data)


def _set_threads(spec: JobSpec, in_ray: bool) -> None:
    threads = spec.resources.torch_threads
    if threads is None and in_ray:
        threads = max(1, int(spec.resources.cpus_per_worker))
    if threads:
        torch.set_num_threads(threads)


def _method(spec: JobSpec, model: AdaptModel, data: DomainData) -> AdaptationMethod:
    num_target = data.stream.target_rows if data.stream is not None else len(data.target)
    job = RunIdentity(spec.data.benchmark, spec.data.source, spec.data.target,
                      tuple(data.classes), spec.model.backbone, spec.data.normalize)  # fmt: skip
    info = ModelInfo(model.feature_dim, data.num_classes, num_target, job)
    return METHODS.get(spec.method.name)(spec.method.resolved_params(), info)


def _regularizer(spec: JobSpec, model: AdaptModel, ctx: WorkerContext) -> L2SP | None:
    ft = spec.finetune
    if ft.l2sp_alpha <= 0 and ft.l2sp_beta <= 0:
        return None
    new = list(model.bottleneck.parameters()) + list(model.head.parameters())
    return L2SP(model.backbone, new, ft.l2sp_alpha, ft.l2sp_beta).to_device(ctx.device)


def _augment(spec: JobSpec, method: AdaptationMethod) -> AugmentSpec:
    aug = spec.finetune.augment
    if method.needs_strong and not aug.enabled:
        aug = aug.model_copy(update={"enabled": True})
    return aug


def _shards(cfg: LoopConfig, data: DomainData, in_ray: bool) -> dict[str, Any] | None:
    """This worker's Ray Data iterators per streamed domain."""
    if data.stream is None:
        return None
    if in_ray:
        import ray.train

        return {n: ray.train.get_dataset_shard(n) for n in data.stream.domains}
    return {n: cfg.datasets[n].iterator() for n in data.stream.domains}


def setup(cfg: LoopConfig) -> Run:
    spec, tr, ft = cfg.spec, cfg.spec.train, cfg.spec.finetune
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    data = _data(cfg)
    ctx = WorkerContext.current(spec.resources.use_gpu, cfg.reporter)
    _set_threads(spec, cfg.reporter.in_ray)
    torch.manual_seed(tr.seed)  # identical initial weights on every rank
    model = job_model(spec, data.input_shape, data.num_classes, data.task_classes)
    if data.normalization is not None:
        model.set_normalization(data.normalization)
    method = _method(spec, model, data)
    module = TrainModule(model, method)  # method.setup first: SHOT loads its source weights,
    module.regularizer = _regularizer(spec, model, ctx)  # which L2-SP then keeps close
    if data.target_labelled is not None:  # semi-supervised: the labelled-target term
        module.target_label_weight = spec.data.target_label_weight
    module.tasks = spec.tasks[1:]  # multi-task: the extra tasks' losses
    module = module.to(ctx.device)
    aug = _augment(spec, method)
    if ft.strategy == "feature-extraction":
        model.freeze_backbone()
        cacheable = not aug.enabled and data.stream is None and not method.needs_raw_inputs
        if ft.cache_features and cacheable:
            data = cache_features(model, data, tr.eval_batch_size, ctx.device)
    step_cfg = StepConfig.from_spec(spec, ctx.device, image_model=len(data.input_shape) == 3)
    if step_cfg.channels_last:
        module = module.to(memory_format=torch.channels_last)
        model.channels_last = True  # and its inputs, wherever they come from
    if tr.compile == "on" or (tr.compile == "auto" and ctx.device.type == "cuda"):
        compile_network(model)
    pad = getattr(model.backbone, "pad", None)  # token ids: a text backbone's pad id
    weak = build_augment("weak", data.input_shape, aug, pad)
    strong = build_augment("strong", data.input_shape, aug, pad) if method.needs_strong else None
    worker = Worker(tr.batch_size // ctx.world, tr.seed, ctx.rank, ctx.world, ctx.device)
    batches = make_batch_source(
        data, worker, _shards(cfg, data, cfg.reporter.in_ray), method.uses_source, weak, strong,
        aug.source, spec.data.stream, tr.steps,
    )  # fmt: skip
    es = ft.early_stopping
    return Run(
        cfg, spec, ctx, data, model, method, module, build_optimizer(module, spec), step_cfg,
        batches, Checkpointer(cfg.run_dir, ctx, cfg.reporter, tr.keep_checkpoints, cfg.hooks),
        EarlyStopper(es.metric, es.patience, es.min_delta) if es is not None else None,
        dump_spec(spec), {"classes": data.classes, "input_shape": list(data.input_shape)}
        | ({"tasks": data.task_classes} if data.task_classes else {}),
    )  # fmt: skip
