"""The ``search:`` section of a job spec: what Ray Tune varies, how it schedules trials and on
which label-free metric it selects (`shiftray tune`).

    search:
      metric: validator/im              # validator/<registered> or source_val_acc; never target_*
      num_samples: 8
      scheduler: {name: asha, reduction_factor: 2}
      space:
        finetune.backbone_lr_scale: {loguniform: [0.03, 1.0]}
        method.params.trade_off: {uniform: [0.3, 1.0]}
        finetune.stages: {choice: [[{until: 0.3, groups: 0}, {until: 1.0, groups: all}], []]}

A distribution is a one-key mapping: ``uniform``/``loguniform`` [low, high], ``quniform``
[low, high, q], ``randint``/``lograndint`` [low, high) (integers), ``choice`` [values],
``grid`` [values] (every value, times ``num_samples``). Keys are dotted paths into the job spec,
as for command-line overrides. Every value a distribution can give is checked against the job
spec before Ray starts (the bounds of ranges, each choice), so a bad space fails with the field
and the value that would break it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KINDS = ("uniform", "loguniform", "quniform", "randint", "lograndint", "choice", "grid")


class Distribution(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["uniform", "loguniform", "quniform", "randint", "lograndint", "choice", "grid"]
    args: list[Any]

    @model_validator(mode="before")
    @classmethod
    def _one_key(cls, v: Any) -> Any:
        if isinstance(v, dict) and "kind" not in v:
            if len(v) != 1 or next(iter(v)) not in KINDS:
                raise ValueError(
                    f"a distribution is one of {{{' | '.join(KINDS)}: ...}}, got {v!r}"
                )
            kind, args = next(iter(v.items()))
            return {"kind": kind, "args": args}
        return v

    @model_validator(mode="after")
    def _args(self) -> Distribution:
        k, a = self.kind, self.args
        if k in ("choice", "grid"):
            if not a:
                raise ValueError(f"{k} needs at least one value")
            return self
        n = 3 if k == "quniform" else 2
        if len(a) != n or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in a):
            raise ValueError(f"{k} takes {n} numbers ({_ARGS[k]}), got {a!r}")
        if k in ("randint", "lograndint") and not all(isinstance(x, int) for x in a):
            raise ValueError(f"{k} takes integers [low, high), got {a!r}")
        if a[0] >= a[1]:
            raise ValueError(f"{k}: low must be below high, got {a!r}")
        if k.startswith("log") and a[0] <= 0:
            raise ValueError(f"{k}: low must be positive, got {a!r}")
        return self

    def extremes(self) -> list[Any]:
        """The values to check against the job spec: a range's ends, each listed value."""
        if self.kind in ("choice", "grid"):
            return list(self.args)
        if self.kind in ("randint", "lograndint"):
            return [self.args[0], self.args[1] - 1]
        return [float(self.args[0]), float(self.args[1])]

    def default_in_range(self, value: Any) -> bool:
        if self.kind in ("choice", "grid"):
            return value in self.args
        lo, hi = self.args[0], self.args[1]
        return isinstance(value, int | float) and lo <= value <= hi


_ARGS = {"uniform": "low, high", "loguniform": "low, high", "quniform": "low, high, q",
         "randint": "low, high", "lograndint": "low, high"}  # fmt: skip


class SchedulerSpec(BaseModel):
    """How trials are scheduled: ASHA (asynchronous successive halving, Li et al. 2020) stops
    weak trials early, FIFO runs every trial to the end, PBT (population-based training,
    Jaderberg et al. 2017) runs them all to the end but, every ``perturbation_interval`` steps,
    restarts a trial in the bottom ``quantile_fraction`` (by the search metric: label-free)
    from a top trial's checkpoint, with that trial's values perturbed (x0.8 or x1.2, a
    neighbouring choice) or, with ``resample_probability``, drawn afresh from the space."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["asha", "fifo", "pbt"] = Field("asha", description="trial scheduler")
    grace_period: int | None = Field(
        None, ge=1, description="ASHA: steps before a trial can be stopped (default: eval_every)"
    )
    reduction_factor: float = Field(2.0, gt=1.0, description="ASHA: keep 1/this at each rung")
    perturbation_interval: int | None = Field(
        None, ge=1, description="PBT: steps between exploit/explore (default: 2 x eval_every)"
    )
    quantile_fraction: float = Field(
        0.25, gt=0.0, le=0.5, description="PBT: the bottom fraction that copies the top one"
    )
    resample_probability: float = Field(
        0.25, ge=0.0, le=1.0, description="PBT: chance a value is redrawn rather than perturbed"
    )


class SearchSpec(BaseModel):
    """What `shiftray tune` varies, how it schedules the trials and what it selects on."""

    model_config = ConfigDict(extra="forbid")

    space: dict[str, Distribution] = Field(
        ...,
        description="dotted spec path -> one of {uniform: [low, high]}, {loguniform: [low, "
        "high]}, {quniform: [low, high, q]}, {randint: [low, high]} (high excluded), "
        "{lograndint: [low, high]}, {choice: [values]}, {grid: [values]}",
    )
    metric: str = Field(
        "validator/im",
        description="what selects: validator/<name> or source_val_acc (higher is better); the "
        "shipped searches use the validator shiftray.search.selection picks for their benchmark "
        "from the other benchmarks' searches (docs: Search)",
    )
    num_samples: int = Field(8, ge=1, description="trials (times each grid point)")
    algorithm: Literal["random", "optuna"] = Field(
        "random", description="random (with grid points) or Optuna TPE (pip install optuna)"
    )
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="default: as many as the cluster's CPUs (and GPUs) fit"
    )
    include_default: bool = Field(
        True, description="the job spec's own values are the first trial (random search)"
    )
    validators: list[str] | None = Field(
        None, description="scored in every trial; default: every registered one the job can score"
    )
    max_failures: int = Field(1, ge=0, description="retries of a failed trial, from its checkpoint")
    seed: int | None = Field(0, description="the search algorithm's seed (None: random)")

    @field_validator("space")
    @classmethod
    def _not_empty(cls, v: dict[str, Distribution]) -> dict[str, Distribution]:
        if not v:
            raise ValueError("the search space is empty: give at least one dotted path")
        for key in v:
            if key.split(".")[0] in ("search", "name", "tracking"):
                raise ValueError(f"{key!r} cannot be searched (it names or places the trials)")
        return v

    @field_validator("metric")
    @classmethod
    def _label_free(cls, v: str) -> str:
        from shiftray.registry import VALIDATORS

        if v == "source_val_acc":
            return v
        if v.startswith("target_"):
            raise ValueError(
                f"{v!r} reads target labels, which are for reporting only: select on "
                "validator/<name> or source_val_acc"
            )
        if not v.startswith("validator/"):
            raise ValueError(f"metric {v!r}: use validator/<name> or source_val_acc")
        VALIDATORS.check(v.removeprefix("validator/"))
        return v

    @model_validator(mode="after")
    def _optuna_no_grid(self) -> SearchSpec:
        if self.algorithm == "optuna" and any(d.kind == "grid" for d in self.space.values()):
            raise ValueError("algorithm optuna samples: use choice instead of grid")
        if self.scheduler.name == "pbt":
            if self.algorithm != "random":
                raise ValueError("scheduler pbt draws its own trials: use algorithm random")
            if any(d.kind == "grid" for d in self.space.values()):
                raise ValueError("scheduler pbt perturbs values: use choice instead of grid")
        return self
