"""The job spec: one validated description of what to train, where, and how to track it.

Every section is a small pydantic model with ``extra="forbid"`` so a misspelt key fails with
its dotted path. Names that refer to registered components (benchmarks, backbones, methods)
are checked against their registries, and the error lists what is registered.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from shiftray.config.components import nested_error, validate_options
from shiftray.config.search import SearchSpec
from shiftray.registry import (
    BACKBONES,
    BUILTIN_PARAMS,
    DATASETS,
    FAMILIES,
    METHODS,
    VALIDATORS,
    family_of,
    reads_tokens,
)

# pyarrow.fs.FileSystem.from_uri's schemes (ADLS: abfs/abfss; HDFS needs libhdfs on the nodes)
STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StreamSpec(Strict):
    """Ray Data streaming of the training splits from Parquet shards (``benchmark: parquet``).

    Off: the domains are read into memory once and shared through the object store (small
    data). On: each worker reads its share of both domains' shards (``get_dataset_shard``),
    decodes encoded images itself (nvjpeg on GPU workers) and the test split stays in memory.
    """

    enabled: bool = Field(False, description="stream the training splits (benchmark: parquet)")
    shuffle_buffer: int = Field(
        1024, ge=0, description="rows in each worker's local shuffle buffer (0: file order)"
    )
    prefetch_batches: int = Field(
        2, ge=0, description="Ray Data windows of raw rows each worker fetches ahead"
    )
    read_ahead: int = Field(
        8, ge=0, description="steps each worker reads and decodes ahead on a background thread"
    )
    decode_threads: int = Field(4, ge=1, description="CPU threads decoding images per worker")


class LabelWeight(Strict):
    """A weight that moves linearly with training progress p: start + (end - start) p."""

    start: float = Field(1.0, ge=0.0, description="the weight at p = 0")
    end: float = Field(1.0, ge=0.0, description="the weight at p = 1")

    def at(self, progress: float) -> float:
        return self.start + (self.end - self.start) * progress


class DataSpec(Strict):
    """Which domains to adapt between."""

    benchmark: str = Field("digits", description="registered dataset (shiftray ls)")
    source: str = Field(..., description="source domain (labelled)")
    target: str = Field(..., description="target domain (its labels are never read in training)")
    options: dict[str, Any] = Field(
        default_factory=dict, description="reader options", validate_default=True
    )
    source_val_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="labelled source held out for validation"
    )
    normalize: Literal["none", "zscore", "l1", "l2", "log1p"] = Field(
        "none",
        description="feature transform inside the model; zscore's statistics are fitted on the "
        "source and target training rows and saved with the checkpoint",
    )
    stream: StreamSpec = Field(default_factory=StreamSpec)
    target_labels_per_class: int = Field(
        0,
        ge=0,
        description="semi-supervised DA: k labelled target training examples per class "
        "train as a third stream (evaluation excludes them); 0 = unsupervised",
    )
    target_labels_seed: int = Field(0, description="which k examples per class are labelled")
    target_label_weight: LabelWeight = Field(
        default_factory=LabelWeight,
        description="weight of the labelled-target loss beside the source's (1), moving with "
        "progress: start 0, end 1 shifts the labelled signal from the source to the target",
    )

    @field_validator("benchmark")
    @classmethod
    def _known_benchmark(cls, v: str) -> str:
        return DATASETS.check(v)

    @field_validator("options")
    @classmethod
    def _benchmark_options(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Checked against the chosen benchmark's Options (errors at data.options.<key>)."""
        if "benchmark" in info.data:  # else the benchmark's own error says what is registered
            name = info.data["benchmark"]
            validate_options(DATASETS.get(name).Options, v, f"dataset {name!r}", "an option")
        return v

    @model_validator(mode="after")
    def _known_domains(self) -> DataSpec:
        bench = DATASETS.get(self.benchmark)
        domains = bench.domains(bench.Options.model_validate(self.options))
        if domains is None:
            return self
        bad = [
            ((f,), f"not a domain of {self.benchmark!r}; allowed: {', '.join(domains)}", v)
            for f, v in (("source", self.source), ("target", self.target))
            if v not in domains
        ]
        if bad:
            raise nested_error("data", bad)
        return self


class ModelSpec(Strict):
    """Backbone + bottleneck + classifier."""

    backbone: str = Field(
        "lenet",
        description="a registered backbone, or "
        + "; ".join(f"{f.prefix}<name>: {f.about}" for f in FAMILIES),
    )
    pretrained: bool | str = Field(
        False,
        description="false, true (hub), imagenet-package (weights from a pip package), or a file",
    )
    backbone_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="backbone options, e.g. mlp hidden: [50], activation: sigmoid",
    )
    bottleneck_dim: int = Field(256, ge=0, description="0 = no bottleneck")
    bottleneck_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout in the bottleneck")
    head_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the classifier")

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        fam = family_of(v)
        if fam is None:
            return BACKBONES.check(v)
        name = v.removeprefix(fam.prefix)
        if not name.strip("/"):
            raise ValueError(f"{v!r}: name the model after {fam.prefix} ({fam.about})")
        if fam.check:
            fam.load("check")(name)
        return v


class MethodSpec(Strict):
    """The adaptation method and its hyper-parameters (validated by the method's Params)."""

    name: str = Field("erm", description="registered method (shiftray ls; see Methods)")
    params: dict[str, Any] = Field(
        default_factory=dict,
        validate_default=True,
        description="the method's parameters (table below)",
    )

    @field_validator("name")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return METHODS.check(v)

    @field_validator("params")
    @classmethod
    def _valid_params(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Checked against the method's Params (errors at method.params.<key>)."""
        if "name" in info.data:  # else the name's own error says what is registered
            name = info.data["name"]
            validate_options(METHODS.params_of(name), v, f"method {name!r}", "a parameter")
        return v

    def resolved_params(self) -> BaseModel:
        return METHODS.params_of(self.name).model_validate(self.params)


def needs_whole_target(method: str) -> bool:
    """Whether ``method`` keeps per-example state over the whole target set: a built-in's Params
    says so (no torch import); a plugin's method class is imported and asked."""
    return _trait(method, "needs_whole_target")


def uses_source(method: str) -> bool:
    """Whether ``method`` reads the labelled source (False: source-free, as SHOT)."""
    return _trait(method, "uses_source")


def _trait(method: str, name: str) -> bool:
    if method in BUILTIN_PARAMS["method"]:
        return getattr(METHODS.params_of(method), name)
    return getattr(METHODS.get(method), name)


class AugmentSpec(Strict):
    """Weak / strong views (images: shift, flip, RandAugment, Cutout; vectors: noise, dropout)."""

    enabled: bool = Field(False, description="on by default for methods that need a strong view")
    source: bool = Field(False, description="also apply the weak view to source batches")
    shift: int = Field(2, ge=0, description="max translation in pixels")
    flip: bool = Field(False, description="images: random horizontal flip in the weak view")
    randaugment_ops: int = Field(2, ge=0, description="images: RandAugment ops per strong view")
    randaugment_magnitude: int = Field(10, ge=0, le=30, description="images: RandAugment magnitude")
    cutout: float = Field(0.25, ge=0.0, lt=1.0, description="cutout box side / image side")
    noise: float = Field(0.1, ge=0.0, description="vectors: noise x feature std")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="vectors: strong-view feature dropout")


class UnfreezeStage(Strict):
    """One stage of gradual unfreezing: until progress ``until``, the top ``groups`` backbone
    layer groups train (0 = head only, "all" = everything), their lr times ``lr_scale``."""

    until: float = Field(..., gt=0.0, le=1.0, description="the stage lasts until this progress")
    groups: int | Literal["all"] = Field(..., description="top backbone groups trainable")
    lr_scale: float = Field(1.0, ge=0.0, description="lr multiplier of the trainable groups")

    @field_validator("groups")
    @classmethod
    def _non_negative(cls, v):
        if isinstance(v, int) and v < 0:
            raise ValueError("must be >= 0 or 'all'")
        return v


class EarlyStoppingSpec(Strict):
    """Stop when ``metric`` has not improved by ``min_delta`` for ``patience`` evaluations.
    target_entropy (lower is better) and target_im (higher) need no labels; source_val_acc
    needs ``data.source_val_fraction`` > 0."""

    metric: Literal["source_val_acc", "target_entropy", "target_im"] = Field(
        "source_val_acc", description="what is watched (the target_ ones need no labels)"
    )
    patience: int = Field(3, ge=1, description="evaluations without improvement before stopping")
    min_delta: float = Field(0.0, ge=0.0, description="the least change that counts as better")
    restore_best: bool = Field(
        True, description="the run's final model is the best step's (its checkpoint is kept)"
    )


class LoraSpec(Strict):
    """LoRA adapters (Hu et al., ICLR 2022) on the backbone's linear layers, through peft: the
    backbone stays frozen, y = W x + (alpha / rank) B A x trains (A, B and the new layers)."""

    rank: int = Field(8, ge=1, description="r: the update's rank")
    alpha: float = Field(16.0, gt=0.0, description="the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapters' input")
    target_modules: list[str] | None = Field(
        None,
        description="linear-layer name suffixes to adapt (default: the attention projections, "
        "qkv in timm ViTs, query/value in BERT-style encoders)",
    )


class FinetuneSpec(Strict):
    """How the pre-trained backbone is transferred.

    fine-tune: everything trains (backbone at lr x backbone_lr_scale). feature-extraction: the
    backbone is frozen (eval mode, no gradients) and its features are cached when nothing else
    changes them. gradual-unfreeze: ``stages`` unfreeze backbone groups from the top over
    progress. layer_decay / group_lr_scales give discriminative (layer-wise) learning rates.
    """

    strategy: Literal["fine-tune", "feature-extraction", "gradual-unfreeze"] = Field(
        "fine-tune", description="how the backbone trains (see Transfer strategies)"
    )
    backbone_lr_scale: float = Field(1.0, ge=0.0, description="backbone lr = lr x this; 0 freezes")
    layer_decay: float | None = Field(
        None, gt=0.0, le=1.0, description="group i of L: lr x decay^(L-1-i) (top group x1)"
    )
    group_lr_scales: dict[int, float] = Field(
        default_factory=dict, description="explicit multipliers by backbone group (0 = stem)"
    )
    stages: list[UnfreezeStage] = Field(
        default_factory=lambda: [
            UnfreezeStage(until=0.2, groups=0),
            UnfreezeStage(until=0.4, groups=1, lr_scale=0.5),
            UnfreezeStage(until=0.6, groups=2, lr_scale=0.5),
            UnfreezeStage(until=1.0, groups="all", lr_scale=1.0),
        ],
        description="gradual-unfreeze stages, in order of until (the last until = 1)",
    )
    cache_features: bool = Field(True, description="feature-extraction: compute features once")
    l2sp_alpha: float = Field(0.0, ge=0.0, description="L2-SP: alpha/2 |w - w0|^2 on the backbone")
    l2sp_beta: float = Field(0.0, ge=0.0, description="L2-SP: beta/2 |w|^2 on new layers")
    early_stopping: EarlyStoppingSpec | None = Field(
        None, description="stop when a metric stops improving; the best step's model is kept"
    )
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    lora: LoraSpec | None = Field(
        None,
        description="LoRA adapters on a frozen pre-trained backbone (checkpoints hold them only)",
    )

    @model_validator(mode="after")
    def _stages_ordered(self) -> FinetuneSpec:
        ends = [s.until for s in self.stages]
        if self.strategy == "gradual-unfreeze":
            if not ends or ends != sorted(ends) or ends[-1] != 1.0:
                raise ValueError(
                    f"finetune.stages: until must increase and end at 1.0 (got {ends})"
                )
        return self


class OptimSpec(Strict):
    """The optimizer and its learning-rate schedule (a pure function of progress p)."""

    name: Literal["sgd", "adam", "adamw"] = Field("sgd", description="the optimizer")
    lr: float = Field(0.01, gt=0.0, description="base learning rate (new layers; see finetune)")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    nesterov: bool = Field(True, description="SGD Nesterov momentum")
    weight_decay: float = Field(
        1e-3, ge=0.0, description="none on frozen groups; L2-SP replaces it"
    )
    schedule: Literal["constant", "inv", "cosine"] = Field(
        "inv", description="inv: lr (1 + gamma p)^-power (Ganin & Lempitsky 2015)"
    )
    inv_gamma: float = Field(10.0, ge=0.0, description="inv schedule gamma")
    inv_power: float = Field(0.75, ge=0.0, description="inv schedule power")
    warmup: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of training")
    grad_clip: float | None = Field(None, gt=0.0, description="clip the global gradient norm")


class TrainSpec(Strict):
    """How long and how: steps, batches, evaluation, checkpoints, numerics."""

    steps: int = Field(2000, gt=0, description="optimizer steps; progress p = step / steps")
    batch_size: int = Field(64, gt=0, description="per domain, summed over workers")
    eval_batch_size: int = Field(1000, gt=0, description="examples per evaluation batch")
    eval_every: int = Field(500, gt=0, description="steps between evaluations")
    checkpoint_every: int = Field(500, gt=0, description="steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept (and the best)")
    log_every: int = Field(50, gt=0, description="steps between metric lines")
    seed: int = Field(0, description="weights, batches, dropout: a pure function of it")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="autocast dtype; auto = bf16 on GPUs that support it, else fp32"
    )
    channels_last: Literal["auto", "on", "off"] = Field(
        "auto",
        description="NHWC memory format for image models; auto = on GPU, and on CPU for the "
        "lenet backbone only (bench/memory_format.py on CPU: LeNet x1.64 faster, timm resnet18 "
        "at 64 px x0.84, slower)",
    )
    compile: Literal["auto", "on", "off"] = Field(
        "off",
        description="torch.compile the network (backbone, bottleneck, head; the "
        "methods' losses stay eager); auto = on for GPU",
    )
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")

    label_free_scores: bool = Field(
        False, description="also score target_entropy / target_im on the whole unlabelled target"
    )
    validators: list[str] = Field(
        default_factory=list,
        description="registered validators (shiftray ls) scored at each evaluation as "
        "validator/<name>, on a fixed sample of target rows",
    )
    validator_rows: int = Field(
        2048, ge=16, description="target (and held-out source) rows the validators score"
    )

    @field_validator("validators")
    @classmethod
    def _known_validators(cls, v: list[str]) -> list[str]:
        from shiftray.registry import VALIDATORS

        for name in v:
            VALIDATORS.check(name)
        if len(set(v)) != len(v):
            raise ValueError(f"validators are listed twice: {v}")
        return v

    @field_validator("channels_last", "compile", mode="before")
    @classmethod
    def _on_off(cls, v: Any) -> Any:
        """YAML reads a bare on/off (or yes/no) as a bool: take it as the switch it names."""
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


class ResourcesSpec(Strict):
    """Where it runs: Ray Train workers, GPUs, CPUs, restarts."""

    num_workers: int = Field(1, ge=1, description="Ray Train workers")
    use_gpu: bool = Field(False, description="one GPU per worker")
    cpus_per_worker: float = Field(1.0, gt=0.0, description="CPUs per worker")
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="process group; auto = gloo on CPU, nccl on GPU"
    )
    torch_threads: int | None = Field(None, ge=1, description="intra-op threads per worker")
    max_failures: int = Field(
        0, ge=-1, description="worker-group restarts from the last checkpoint (-1 = unlimited)"
    )


class TrackingSpec(Strict):
    """Where results go: the run directory, checkpoint storage, W&B."""

    wandb: Literal["online", "offline", "disabled"] = Field(
        "offline", description="online needs WANDB_API_KEY; offline writes under the run dir"
    )
    project: str = Field("shiftray", description="W&B project")
    group: str | None = Field(
        None, description="W&B group (a search puts its trials in one: the search's name)"
    )
    output_dir: str = Field("runs", description="runs are written to <output_dir>/<name>")
    storage_path: str | None = Field(
        None,
        description="where Ray Train persists checkpoints: a pyarrow.fs URI (s3://bucket/dir, "
        "gs://bucket/dir, file:///shared/dir) or a path on storage every node mounts; unset: "
        "checkpoints stay in the run directory (one machine)",
    )

    @field_validator("storage_path")
    @classmethod
    def _storage_uri(cls, v: str | None) -> str | None:
        """Checked before Ray starts: a scheme pyarrow.fs reads, no secrets (the spec is copied
        into every checkpoint and the tracker), and no relative path (each node would resolve it
        against its own working directory)."""
        if v is None:
            return v
        m = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)", v)
        if m is None:
            if v.startswith("~"):
                raise ValueError(
                    f"{v!r}: '~' is not expanded (each node would read it as its own user's "
                    "home); give the absolute path every node mounts"
                )
            if not v.startswith("/"):
                raise ValueError(
                    f"{v!r} is a relative path; give an absolute path every node mounts or a "
                    f"URI with one of the schemes {', '.join(STORAGE_SCHEMES)}"
                )
            return v
        scheme, authority = m.group(1).lower(), m.group(2)
        if scheme not in STORAGE_SCHEMES:
            raise ValueError(
                f"scheme {scheme!r} is not a pyarrow.fs filesystem; allowed: "
                f"{', '.join(STORAGE_SCHEMES)}"
            )
        if ":" in authority.rpartition("@")[0]:  # user:secret@ (abfs container@account is fine)
            raise ValueError(
                "credentials in the URI would be written into every checkpoint's spec.yaml; "
                "give them to every node through the environment instead (AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, or the node's role)"
            )
        query = v.partition("?")[2].lower()
        if any(k in query for k in ("key", "secret", "token", "password", "credential")):
            raise ValueError(
                f"{v.partition('?')[0]}?...: credentials in the URI's query would be written "
                "into every checkpoint's spec.yaml; give them to every node through the "
                "environment instead (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
                "GOOGLE_APPLICATION_CREDENTIALS, or the node's role)"
            )
        if scheme != "file" and not authority:
            raise ValueError(f"{v!r} names no bucket or host: {scheme}://BUCKET/dir")
        return v


class TaskSpec(Strict):
    """One task on the shared backbone. The first task of ``tasks`` is the primary one: its
    labels are the dataset's, and the adaptation method, evaluation (``target_acc``) and serving
    use its head. Every other task gets its own head on the shared features, trains on the
    labelled source rows' ``label`` column, and is reported as ``task/<name>/target_acc``."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_\-]+$", description="the task's name in metrics")
    label: str | None = Field(
        None, description="its label column (table reader); the primary task: the dataset's label"
    )
    weight: float = Field(1.0, ge=0.0, description="fixed loss weight (the primary's is 1)")
    loss: Literal["ce"] = Field("ce", description="cross-entropy on the task's classes")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


class JobSpec(Strict):
    name: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        description="run name: the run directory is <tracking.output_dir>/<name>",
    )
    data: DataSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    method: MethodSpec = Field(default_factory=MethodSpec)
    finetune: FinetuneSpec = Field(default_factory=FinetuneSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    search: SearchSpec | None = Field(
        None, description="what `shiftray tune` varies and selects on (`shiftray run` ignores it)"
    )
    tasks: list[TaskSpec] = Field(
        default_factory=list,
        description="multi-task learning: the first is the primary task, the rest are extra heads",
    )
    task_weighting: Literal["fixed", "uncertainty"] = Field(
        "fixed",
        description="extra tasks' losses: x weight, or learned homoscedastic uncertainty "
        "exp(-s) L + s/2 (Kendall et al., CVPR 2018)",
    )

    def _require_source(self, what: str) -> None:
        if not uses_source(self.method.name):
            raise ValueError(f"{what}, which method {self.method.name!r} never reads (source-free)")

    @model_validator(mode="after")
    def _source_val_needed(self) -> JobSpec:
        es = self.finetune.early_stopping
        if es is not None and es.metric == "source_val_acc" and self.data.source_val_fraction <= 0:
            raise ValueError(
                "finetune.early_stopping.metric=source_val_acc needs data.source_val_fraction > 0"
            )
        if es is not None and es.metric == "source_val_acc" and not uses_source(self.method.name):
            raise ValueError(
                f"finetune.early_stopping.metric=source_val_acc: method {self.method.name!r} is "
                "source-free (it never reads the source); use target_entropy or target_im"
            )
        return self

    @model_validator(mode="after")
    def _validators_have_data(self) -> JobSpec:
        from shiftray.registry import VALIDATORS

        for name in self.train.validators:
            if not getattr(VALIDATORS.get(name), "needs_source", False):
                continue
            if self.data.source_val_fraction <= 0:
                raise ValueError(
                    f"train.validators: {name!r} scores held-out labelled source rows and needs "
                    "data.source_val_fraction > 0"
                )
            self._require_source(f"train.validators: {name!r} reads the source")
        return self

    @model_validator(mode="after")
    def _streamable(self) -> JobSpec:
        if not self.data.stream.enabled:
            return self
        if not getattr(DATASETS.get(self.data.benchmark), "streamable", False):
            raise ValueError(
                f"data.stream.enabled streams Parquet shards; benchmark {self.data.benchmark!r} "
                f"is read into memory. Write it as shards with `shiftray data prepare "
                f"{self.data.benchmark} --out DIR --shard-rows N` and use benchmark: parquet"
            )
        if self.data.source_val_fraction > 0:
            raise ValueError(
                "data.source_val_fraction needs the in-memory path (data.stream.enabled: false); "
                "write a held-out source split as its own domain instead"
            )
        if self.data.target_labels_per_class > 0:
            raise ValueError(
                "data.target_labels_per_class needs the in-memory path (data.stream.enabled: false)"
            )
        if needs_whole_target(self.method.name):
            raise ValueError(
                f"method {self.method.name!r} keeps per-example state over the whole target set "
                "and needs data.stream.enabled: false"
            )
        return self

    @model_validator(mode="after")
    def _tasks(self) -> JobSpec:
        if not self.tasks:
            return self
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks: names must differ (got {names})")
        if self.tasks[0].weight != 1.0:
            raise ValueError("tasks[0] is the primary task: its loss is the method's, weight 1")
        if missing := [t.name for t in self.tasks[1:] if not t.label]:
            raise ValueError(f"tasks: {missing} need a label column (tasks[].label)")
        if self.data.stream.enabled:
            raise ValueError(
                "tasks: extra tasks need the in-memory path (data.stream.enabled: false)"
            )
        self._require_source("tasks: extra tasks train on labelled source rows")
        return self

    @model_validator(mode="after")
    def _text_inputs(self) -> JobSpec:
        if not reads_tokens(self.model.backbone):
            return self
        if self.data.normalize != "none":
            raise ValueError(
                "data.normalize transforms feature vectors; a text backbone reads token ids"
            )
        mixing = [
            v for v in self.train.validators if getattr(VALIDATORS.get(v), "mixes_inputs", False)
        ]
        if mixing:
            raise ValueError(
                f"train.validators: {', '.join(mixing)} mix inputs, and token ids do not mix; drop "
                "them for text"
            )
        return self

    @model_validator(mode="after")
    def _lora_has_a_base(self) -> JobSpec:
        if self.finetune.lora is None:
            return self
        if self.model.pretrained is False:
            raise ValueError(
                "finetune.lora adapts pre-trained weights, which its checkpoints name but do not "
                "hold: set model.pretrained (true, imagenet-package or a file)"
            )
        if not _trait(self.method.name, "accepts_lora"):
            raise ValueError(
                f"finetune.lora with method {self.method.name}: it starts from a whole trained "
                "model; train this job without finetune.lora (the run it starts from may use LoRA)"
            )
        if self.finetune.strategy == "feature-extraction":
            raise ValueError(
                "finetune.lora trains adapters inside the backbone; use finetune.strategy "
                "fine-tune or gradual-unfreeze (feature-extraction trains none of it)"
            )
        return self

    @model_validator(mode="after")
    def _batch_splits(self) -> JobSpec:
        if self.train.batch_size % (self.resources.num_workers * self.train.grad_accum):
            raise ValueError(
                f"train.batch_size={self.train.batch_size} must be divisible by "
                f"resources.num_workers={self.resources.num_workers} x train.grad_accum={self.train.grad_accum}"
            )
        return self
