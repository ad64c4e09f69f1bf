"""Ray Tune searches end to end on generated data (one Ray session for the module; the
kill-and-resume test runs `shiftray tune` in processes of its own, as a user would)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import synthetic_spec

pytestmark = pytest.mark.ray

SPACE = {"optim.lr": {"loguniform": [0.0005, 0.3]}, "method.params.trade_off": {"uniform": [0.1, 1.0]}}


def search_file(tmp_path: Path, search: dict, **over) -> Path:
    raw = synthetic_spec(name="s", tracking={"wandb": "disabled", "output_dir": str(tmp_path / "out")},
                         **over)  # fmt: skip
    raw["data"]["source_val_fraction"] = 0.2
    raw["search"] = search
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def ray_session():
    import ray
    from shiftray.train.launch import ensure_ray

    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.mark.timeout(400)
def test_asha_stops_trials_and_the_next_ones_run(ray_session, tmp_path):
    """Each trial holds both CPUs, so one runs at a time: a trial stopped by ASHA that kept
    its placement group would leave the next one pending forever (the timeout fails this)."""
    from shiftray.search.driver import run_search
    from shiftray.search.space import load_search

    path = search_file(
        tmp_path,
        {"space": SPACE, "num_samples": 6, "metric": "validator/im",
         "scheduler": {"name": "asha", "grace_period": 10, "reduction_factor": 3}},
        resources={"num_workers": 1, "cpus_per_worker": 2},
        train__steps=60, train__eval_every=10,
    )  # fmt: skip
    result = run_search(load_search(path))
    s = result.summary
    assert len(s.trials) == 6  # every trial started and reported
    assert any(t.step < 60 for t in s.trials), [t.step for t in s.trials]  # ASHA stopped some
    assert any(t.step == 60 for t in s.trials)
    assert s.default is not None and s.trial(s.default).config == {"optim.lr": 0.05, "method.params.trade_off": 1.0}
    assert set(s.validators) >= {"validator/im", "validator/dev", "validator/mixval"}
    assert s.selected == max(s.trials, key=lambda t: t.metrics["validator/im"]).trial_id
    saved = json.loads((result.search_dir / "search.json").read_text())
    assert saved["selected"] == s.selected and saved["provenance"]["spec_sha256"]
    # the selected trial, exported as a run directory the serving app and --resume accept
    best = result.search_dir / "best"
    assert (best / "spec.yaml").is_file() and (best / "labels.json").is_file()
    assert any(best.glob("checkpoint_*/model.safetensors"))
    from shiftray.serving.predictor import Predictor

    assert Predictor(best).classes
    # TensorBoard's HParams view: every trial's event file holds its searched values, and the
    # experiment lists the validators among its metrics
    trials = sorted(result.search_dir.glob("run_trial_*/events.out.tfevents.*"))
    assert len(trials) == 6
    for f in trials:
        hparams, metrics = hparams_of(f)
        assert set(hparams) == set(SPACE) and "ray/tune/validator/im" in metrics


def hparams_of(path: Path) -> tuple[dict, list]:
    """The HParams plugin's session values and metric tags in a TensorBoard event file (read
    record by record: length, CRC, the Event, CRC)."""
    import struct

    from tensorboardX.proto import event_pb2, plugin_hparams_pb2

    data, i, hparams, metrics = path.read_bytes(), 0, {}, []
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i : i + 8])
        event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
        i += 12 + n + 4
        for v in event.summary.value:
            if v.metadata.plugin_data.plugin_name != "hparams":
                continue
            content = plugin_hparams_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
            hparams |= {k: x.number_value for k, x in content.session_start_info.hparams.items()}
            metrics += [m.name.tag for m in content.experiment.metric_infos]
    return hparams, metrics


@pytest.mark.timeout(300)
def test_optuna_search(ray_session, tmp_path):
    from shiftray.search.driver import run_search
    from shiftray.search.space import load_search

    pytest.importorskip("optuna")
    path = search_file(
        tmp_path,
        {"space": SPACE | {"method.params.disc_hidden": {"choice": [[8], [16]]}}, "num_samples": 3,
         "algorithm": "optuna", "scheduler": {"name": "fifo"}, "validators": ["im"],
         "metric": "validator/im"},
        train__steps=20, train__eval_every=10,
    )  # fmt: skip
    s = run_search(load_search(path)).summary
    assert len(s.trials) == 3 and all(t.step == 20 for t in s.trials)
    assert s.trial(s.default).config["method.params.disc_hidden"] == [16]  # the spec's own first
    assert len({t.config["optim.lr"] for t in s.trials}) == 3


@pytest.mark.timeout(400)
def test_trials_of_two_ray_train_workers(ray_session, tmp_path):
    """resources.num_workers > 1: each trial builds a TorchTrainer (Train V2 inside Tune) and its
    reports reach Tune through TuneReportCallback."""
    from shiftray.search.driver import run_search
    from shiftray.search.space import load_search

    path = search_file(
        tmp_path,
        {"space": {"optim.lr": {"choice": [0.01, 0.05]}}, "num_samples": 2, "validators": ["im"],
         "metric": "validator/im", "scheduler": {"name": "fifo"}},
        resources={"num_workers": 2}, train__steps=20, train__eval_every=10,
    )  # fmt: skip
    s = run_search(load_search(path)).summary
    assert len(s.trials) == 2 and all(t.step == 20 for t in s.trials)
    assert all("validator/im" in t.metrics and "target_acc" in t.metrics for t in s.trials)
    run = tmp_path / "out/s/trials" / f"s-{s.selected}"
    assert json.loads((run / "result.json").read_text())["step"] == 20


@pytest.mark.timeout(400)
def test_a_trial_whose_worker_dies_retries_from_its_checkpoint(ray_session, tmp_path):
    """search.max_failures: the trial's process is SIGKILLed at step 25; Tune starts it again
    and the loop resumes from the step-20 checkpoint the trial had registered."""
    from shiftray.search.driver import run_search
    from shiftray.search.space import load_search
    from shiftray.train.hooks import KillOnce

    path = search_file(
        tmp_path,
        {"space": SPACE, "num_samples": 2, "metric": "validator/im", "max_concurrent_trials": 1,
         "max_failures": 1, "scheduler": {"name": "fifo"}},
        train__steps=40, train__eval_every=10,
    )  # fmt: skip
    marker = tmp_path / "killed"
    s = run_search(load_search(path), hooks=(KillOnce(step=25, marker=str(marker)),)).summary
    assert marker.read_text() == "25"  # a trial really died
    assert len(s.trials) == 2 and all(t.step == 40 for t in s.trials)
    results = [json.loads(p.read_text()) for p in (tmp_path / "out/s/trials").glob("*/result.json")]
    assert sorted(r.get("resumed_from") or 0 for r in results) == [0, 20]


@pytest.mark.timeout(500)
def test_pbt_restarts_weak_trials_from_strong_ones(ray_session, tmp_path):
    """PBT: every trial runs to the end; at each perturbation a bottom trial continues from a
    top trial's checkpoint (its own earlier checkpoints replaced) with values perturbed inside
    the space."""
    from shiftray.search.driver import run_search
    from shiftray.search.space import load_search

    path = search_file(
        tmp_path,
        {"space": SPACE, "num_samples": 4, "metric": "validator/im", "max_concurrent_trials": 2,
         "scheduler": {"name": "pbt", "perturbation_interval": 20, "quantile_fraction": 0.5}},
        train__steps=80, train__eval_every=10,
    )  # fmt: skip
    result = run_search(load_search(path))
    s = result.summary
    assert len(s.trials) == 4 and all(t.step == 80 for t in s.trials), [
        (t.trial_id, t.step, t.metrics.get("iterations_since_restore")) for t in s.trials]
    exploits = [json.loads(line) for f in result.search_dir.glob("pbt_policy_*.txt")
                for line in f.read_text().splitlines()]  # fmt: skip
    assert exploits, "no trial was restarted from another's checkpoint"
    for t in s.trials:  # perturbed (x0.8 / x1.2) values stay inside the space
        assert 0.0005 <= t.config["optim.lr"] <= 0.3 and 0.1 <= t.config["method.params.trade_off"] <= 1.0
    # an exploited trial's run directory continued from the donor's step, not its own lineage
    runs = [json.loads(p.read_text()) for p in (result.search_dir / "trials").glob("*/result.json")]
    assert any((r.get("resumed_from") or 0) > 0 for r in runs)


def _finished(search_dir: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in search_dir.glob("trials/*/result.json")}


@pytest.mark.timeout(600)
def test_killed_search_resumes_without_rerunning_finished_trials(tmp_path):
    path = search_file(
        tmp_path,
        {"space": SPACE, "num_samples": 4, "metric": "validator/bnm", "max_concurrent_trials": 1,
         "scheduler": {"name": "fifo"}},
        train__steps=200, train__eval_every=20,
    )  # fmt: skip
    search_dir = tmp_path / "out" / "s"
    ray_tmp = tempfile.mkdtemp(prefix="sr-", dir="/tmp")  # Ray's socket paths must stay short
    env = os.environ | {"SHIFTRAY_RAY_TMP": ray_tmp}
    cmd = [sys.executable, "-m", "shiftray.cli", "tune", str(path)]
    log = open(tmp_path / "first.log", "w")  # noqa: SIM115
    first = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(_finished(search_dir)) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]  # still running
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray it started: its own session
    first.wait()
    done = _finished(search_dir)
    assert len(done) >= 2, (tmp_path / "first.log").read_text()[-3000:]
    assert not (search_dir / "search.json").exists()  # it did not get to the end

    again = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    summary = json.loads((search_dir / "search.json").read_text())
    assert len(summary["trials"]) == 4 and all(t["step"] == 200 for t in summary["trials"])
    after = _finished(search_dir)
    assert len(after) == 4
    for name, mtime in done.items():  # no finished trial trained again. One whose end Tune had
        if after[name] == mtime:  # not yet saved in its experiment state is started again, and
            continue  # resumes from its final checkpoint: no step to train, it only finishes
        result = json.loads((search_dir / "trials" / name / "result.json").read_text())
        assert result["resumed_from"] == result["step"] == 200, (name, result)
