"""shiftray from Python: the calls the command line makes, for scripts and notebooks.

    import shiftray

    job = shiftray.load_job("jobs/digits/mnist-usps-dann.yaml", ["train.steps=500"])
    run = shiftray.fit(job, ray=False)           # trains (or resumes) into run.run_dir
    model = shiftray.load(run.run_dir)
    pred = model.predict(images)                 # arrays, encoded images, paths or texts
    pred.label, pred.probabilities, pred.shift_score

`load_data` reads a job's data as training reads it. `shiftray run` is `load_job` + `fit` for
each spec, `shiftray tune` is `tune`, `shiftray serve` is `serve`: one path for the command line
and for Python.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shiftray.config.load import SpecError, dump_spec, load_spec, spec_changes, spec_from_dict
from shiftray.config.schema import JobSpec


def load_job(job: str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> JobSpec:
    """A validated job spec from a YAML file (its ``base:`` merged in) or a dict, with dotted
    overrides (``"train.steps=500"``) applied; `SpecError` names every bad field."""
    if isinstance(job, Mapping):  # as a file's contents (a dict has no ``base:`` to merge)
        from shiftray.config.load import absolute_paths, apply_overrides, drop_foreign_options

        raw, over = dict(job), list(overrides)
        return spec_from_dict(absolute_paths(drop_foreign_options(raw, apply_overrides(raw, over),
                                                                  over), None))  # fmt: skip
    return load_spec(job, list(overrides))


def load_data(job: JobSpec):
    """The job's data as arrays, read as training reads it (`shiftray.data.arrays.DomainData`:
    ``source`` (x, y), ``target`` (x only: no target label reaches training), ``target_test``
    (x, y: for reporting), ``classes``)."""
    from shiftray.train.launch import job_data

    return job_data(job)


@dataclass(frozen=True)
class RunResult:
    """A finished run: where it is, what it reported last (``result.json``), how long it took."""

    run_dir: Path
    metrics: dict[str, Any]
    seconds: float

    @property
    def target_acc(self) -> float | None:
        """Target-test accuracy (%) of the final model: for reporting, never for choosing."""
        return self.metrics.get("target_acc")

    @property
    def health(self) -> dict[str, bool]:
        """Training health flags (collapse, divergence, ...); all false when it went well."""
        return self.metrics.get("health") or {}


def refuse_changed_run(spec: JobSpec) -> None:
    """A job whose run directory already holds a run of another spec stops, naming the changed
    fields, instead of silently resuming (or returning) the old run under the new spec."""
    import yaml

    from shiftray.train.launch import run_dir_for

    run_dir = run_dir_for(spec)
    # what the run last trained with: its newest checkpoint's spec (a resume with overrides
    # changes it), else the spec it began with
    done = sorted(run_dir.glob("checkpoint_*/spec.yaml")) or [run_dir / "spec.yaml"]
    if not done[-1].is_file():
        return
    changed = spec_changes(yaml.safe_load(done[-1].read_text()), spec.model_dump(mode="json"))
    if changed:
        raise SpecError(
            f"{run_dir} already holds a run of {spec.name} with another spec:\n  "
            + "\n  ".join(changed)
            + "\nstart it over with --restart (restart=True), give the new run another name= , or "
            f"continue the old run with the new values: shiftray run --resume {run_dir} "
            "FIELD=VALUE ..."
        )


def fit(job: JobSpec, *, ray: bool = True, restart: bool = False, resumed: bool = False,
        max_failures: int | None = None, progress: bool = True, data=None) -> RunResult:  # fmt: skip
    """Train ``job`` into ``<tracking.output_dir>/<name>``: on Ray Train with
    ``resources.num_workers`` workers (``ray=False``: the same loop in this process), resuming
    from its newest checkpoint unless ``restart`` deletes the run first. A run directory that
    holds a run of another spec is refused (`refuse_changed_run`) unless ``resumed`` (the
    caller continues that run on purpose, as ``shiftray run --resume`` does). ``data``: the
    job's `shiftray.train.launch.job_data`, when the caller read it already."""
    import io

    from shiftray.progress import LiveProgress
    from shiftray.train.launch import fit as fit_ray
    from shiftray.train.launch import fit_local, job_data, run_dir_for
    from shiftray.train.storage import clear_storage, read_run_file

    if not restart and not resumed:
        refuse_changed_run(job)
    data = job_data(job) if data is None else data  # every data file found before Ray starts
    run_dir = run_dir_for(job)
    if restart and run_dir.exists():
        shutil.rmtree(run_dir)
    if restart and (gone := clear_storage(job)):
        print(f"--restart: deleted {gone}", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "spec.yaml").is_file():  # a resumed run keeps the spec it began with
        (run_dir / "spec.yaml").write_text(dump_spec(job))
    stream = None if progress else io.StringIO()
    with LiveProgress(run_dir, job.name, job.train.steps, stream=stream):
        result = (fit_ray(job, data, max_failures, fresh=restart) if ray
                  else fit_local(job, data, fresh=restart))  # fmt: skip
    final = result.metrics  # what rank 0 last reported
    if (run_dir / "result.json").exists():
        final = json.loads((run_dir / "result.json").read_text())
    elif job.tracking.storage_path and (raw := read_run_file(job, "result.json")):
        final = json.loads(raw)  # rank 0 ran on another node
    return RunResult(Path(result.run_dir), final, result.seconds)


def tune(search_job: str | Path, overrides: Sequence[str] = (), *, resume: bool = False,
         restart: bool = False, num_samples: int | None = None):  # fmt: skip
    """Run the ``search:`` section of a job spec on Ray Tune, selecting without target labels;
    returns the search's summary (`shiftray.search.driver.SearchResult`)."""
    from shiftray.search.driver import run_search
    from shiftray.search.space import load_search

    search = load_search(search_job, list(overrides))  # the spec and every value of the space
    if num_samples:
        search.search.num_samples = num_samples
    return run_search(search, resume=resume, restart=restart)


class Model:
    """A trained run, loaded for prediction in this process (the serving endpoint's predictor,
    with the same input checks): ``shiftray.load(run_dir)``."""

    def __init__(self, run_dir: str | Path, device: str = "cpu") -> None:
        from shiftray.serving.catalog import inspect_model
        from shiftray.serving.predictor import Predictor

        self.run_dir = Path(run_dir)
        card = inspect_model(self.run_dir.name, self.run_dir)
        if not card.ready:
            raise FileNotFoundError(f"{run_dir} cannot be loaded: {card.reason}")
        self._card, self._input = card, card.input
        self._predictor = Predictor(self.run_dir, device, bases=None)

    @property
    def classes(self) -> tuple[str, ...]:
        return self._predictor.classes

    @property
    def card(self) -> dict[str, Any]:
        """Labels, the input contract (what `predict` takes) and the training summary."""
        return self._card.public()

    def inputs(self, inputs: Any) -> np.ndarray:
        """What the model takes, from: an array (N, *shape) (or one instance), encoded images
        (bytes) or image files (paths), or texts for a text model; checked as serving checks
        them (`shiftray.serving.inputs.BadInput`, a ValueError, says what is wrong)."""
        from shiftray.serving.inputs import BadInput, check_count, in_contract, v1_instances

        spec = self._input
        if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "biuf" and spec.kind != "text":
            x = inputs
            grey = spec.kind == "image" and spec.shape[0] == 1
            if x.shape == tuple(spec.shape) or (grey and x.shape == tuple(spec.shape[1:])):
                x = x[None]  # one instance
            if grey and x.ndim == len(spec.shape):  # (N, S, S) grey images
                x = x[:, None]
            if x.shape[1:] != tuple(spec.shape):
                raise BadInput(f"inputs: shape {list(x.shape)}, the model takes "
                               f"[N, {', '.join(map(str, spec.shape))}]")  # fmt: skip
            check_count(len(x), len(x) + 1)
            return in_contract(x, spec, lambda i: f"inputs[{i}]")
        items = [inputs] if isinstance(inputs, (str, bytes, Path)) else list(inputs)
        return v1_instances([_instance(v, spec.kind) for v in items], spec, len(items) + 1)

    def predict(self, inputs: Any, batch_size: int = 256):
        """`shiftray.serving.predictor.Prediction` (label, probabilities, shift_score,
        target_probability for DANN/CDAN, features) for ``inputs`` (see `inputs`)."""
        from shiftray.serving.predictor import Prediction

        x = self.inputs(inputs)
        parts = [self._predictor(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        pred = parts[0] if len(parts) == 1 else Prediction.concat(parts)
        pred.check_finite()  # NonFiniteOutput names the inputs, as serving's 422 does
        return pred

    def features(self, inputs: Any) -> np.ndarray:
        """The features the classifier head reads (the bottleneck's), (N, D)."""
        return self.predict(inputs).features.numpy()


def _instance(value: Any, kind: str) -> Any:
    """One input as a KServe V1 instance: image bytes and files as {"b64": ...}."""
    if kind == "image" and isinstance(value, Path | str) and Path(value).is_file():
        value = Path(value).read_bytes()
    if kind == "image" and isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    return value


def load(run_dir: str | Path, device: str = "cpu") -> Model:
    """A trained run directory (or one of its checkpoints), loaded in this process, ready to
    `Model.predict` (on ``device``: cpu or cuda)."""
    return Model(run_dir, device)


@dataclass(frozen=True)
class Server:
    """A running endpoint (`serve` with ``block=False``): its base URLs and model cards."""

    url: str  # http://host:port
    grpc: str | None  # host:port of the Open Inference Protocol gRPC service, if served
    models: dict[str, Any]  # name -> the model's card (labels, input contract, training)

    def stop(self, grace_s: float = 10.0) -> int:
        """Finish requests in flight, shut Serve and its Ray down; 0 when all stopped in time."""
        from shiftray.serving.local import stop

        return stop(grace_s)


def serve(models: Mapping[str, str | Path], *, port: int = 8000, grpc_port: int | None = None,
          host: str = "127.0.0.1", block: bool = True, grace_s: float = 30.0,
          **app_args: Any):  # fmt: skip
    """Serve run directories by name on Ray Serve (KServe V1, Open Inference Protocol HTTP and
    gRPC). ``block``: until SIGTERM/Ctrl-C, then stop cleanly within ``grace_s`` (returns the
    exit status); else return a `Server` at once (``server.stop()`` ends it). ``port=0`` (and
    ``grpc_port=0``) pick a free port. ``app_args``: `shiftray.serving.args.AppArgs` fields."""
    from pydantic import ValidationError

    from shiftray.errors import UserInputError
    from shiftray.serving.args import AppArgs
    from shiftray.serving.local import free_port, serve_forever, start

    try:
        args = AppArgs(models={k: str(v) for k, v in models.items()}, **app_args)
    except ValidationError as e:
        raise UserInputError("; ".join(
            (f"{'.'.join(map(str, err['loc']))}: " if err["loc"] else "")
            + err["msg"].removeprefix("Value error, ") for err in e.errors())) from None  # fmt: skip
    port = port or free_port()
    grpc_port = free_port() if grpc_port == 0 else grpc_port
    if block:
        return serve_forever(args, host, port, grpc_port, grace_s)
    cards = start(args, host, port, grpc_port=grpc_port)
    return Server(f"http://{host}:{port}", f"{host}:{grpc_port}" if grpc_port else None,
                  {c.name: c.public() for c in cards})  # fmt: skip
