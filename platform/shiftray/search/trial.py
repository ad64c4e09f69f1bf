"""One trial of a search: the ordinary training loop, reporting to Ray Tune.

A single-worker trial runs the loop in the trial's own process (`TuneReporter`: no Ray Train
worker group to start, so a trial costs its training and little else); a trial of several
workers (``resources.num_workers`` > 1) or a streamed one builds a `TorchTrainer` in the trial
(the Ray Train V2 pattern: `Tuner(TorchTrainer)` is refused) whose reports reach Tune through
``TuneReportCallback``. Either way every evaluation is one Tune report carrying ``step``, which
is ASHA's time attribute, and checkpoints are registered so a retried trial resumes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from shiftray.train.checkpoint import checkpoint_name


@dataclass
class TuneCheckpoint:
    """Tune's registered checkpoint under the loop's name for it (``checkpoint_<step>``: Tune
    numbers them by report, the loop by step)."""

    path: str
    checkpoint: Any
    foreign: bool = False  # another trial's (PBT's exploit): it replaces this trial's own

    def to_directory(self, path: str) -> str:
        return self.checkpoint.to_directory(path)


@dataclass(frozen=True)
class TuneReporter:
    """The loop's `Reporter` inside a Tune trial's own process."""

    in_ray: bool = True

    def device(self):
        return None  # CPU, or the trial's GPU (WorkerContext: cuda:0 of the visible ones)

    def registered(self) -> TuneCheckpoint | None:
        from ray import tune

        ckpt = tune.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            step = json.loads((Path(d) / "state.json").read_text())["step"]
            name = yaml.safe_load((Path(d) / "spec.yaml").read_text())["name"]
        own = name.endswith(f"-{tune.get_context().get_trial_id()}")  # trial_spec names it so
        return TuneCheckpoint(str(Path(ckpt.path).parent / checkpoint_name(step)), ckpt, not own)

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        from ray import tune

        ckpt = tune.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None
        tune.report(dict(metrics), checkpoint=ckpt)


def trial_spec(base: dict[str, Any], config: dict[str, Any], search_dir: str, validators: list[str],
               trial_id: str):  # fmt: skip
    """The trial's job spec: its values, its name, its run directory under the search's."""
    from shiftray.config.load import spec_from_dict
    from shiftray.search.space import trial_raw

    raw = trial_raw(base, config)
    raw["name"] = f"{base['name']}-{trial_id}"
    tracking = raw.setdefault("tracking", {})
    tracking["output_dir"] = str(Path(search_dir) / "trials")
    tracking["group"] = tracking.get("group") or base["name"]  # one W&B group per search
    train = raw.setdefault("train", {})
    train["validators"] = list(validators)
    # a checkpoint at every evaluation: a trial stopped at a rung keeps the model it was scored as
    train["checkpoint_every"] = train.get("eval_every", 500)
    return spec_from_dict(raw, f"trial {trial_id}")


def run_trial(config: dict[str, Any], base: dict[str, Any], search_dir: str,
              validators: list[str], indexed: dict[str, list[Any]], data=None,
              hooks: tuple = ()) -> None:  # fmt: skip
    """The Tune function: ``data`` is the search's data (put in the object store once) or None
    when the space varies the data, so each trial reads its own; ``indexed``: the dimensions
    Tune samples by index (`shiftray.search.space.decode`); ``hooks``: loop hooks (tests)."""
    from ray import tune
    from shiftray.search.space import decode
    from shiftray.train.launch import fit, run_dir_for
    from shiftray.train.loop import train_loop_per_worker
    from shiftray.train.run import LoopConfig

    trial_id = tune.get_context().get_trial_id()
    spec = trial_spec(base, decode(config, indexed), search_dir, validators, trial_id)
    if data is None:
        from shiftray.train.launch import job_data

        data = job_data(spec)
    if spec.resources.num_workers == 1 and not spec.data.stream.enabled:
        train_loop_per_worker(LoopConfig(spec, run_dir_for(spec), data, reporter=TuneReporter(),
                                         hooks=tuple(hooks)))  # fmt: skip
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    fit(spec, data=data, hooks=tuple(hooks), callbacks=(TuneReportCallback(),))
