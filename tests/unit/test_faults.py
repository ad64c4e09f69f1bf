"""Killed processes lose nothing: a run SIGKILLed at a random step, or in the middle of writing
a checkpoint, resumes to exactly the result of an uninterrupted run (CPU, same seed)."""

import json
import random
import subprocess
import sys
import textwrap

import pytest
from conftest import synthetic_spec
from shiftray.config.load import spec_from_dict
from shiftray.data.loading import load_job_data
from shiftray.train.checkpoint import latest_checkpoint
from shiftray.train.loop import train_loop_per_worker

OVER = {
    "train__steps": 60,
    "train__checkpoint_every": 20,
    "train__eval_every": 20,
    "train__keep_checkpoints": 5,
    "resources__torch_threads": 1,  # the killed subprocess and this process reduce alike
}


def run_inprocess(run_dir, spec):
    data = load_job_data(spec)
    return train_loop_per_worker(
        {"spec": spec.model_dump(mode="json"), "run_dir": str(run_dir), "data": data}
    )


def run_killed(run_dir, spec, fault):
    code = textwrap.dedent(
        f"""
        import json, sys
        from shiftray.config.schema import JobSpec
        from shiftray.data.loading import load_job_data
        from shiftray.train.loop import train_loop_per_worker
        spec = JobSpec.model_validate(json.loads(sys.argv[1]))
        train_loop_per_worker({{"spec": spec.model_dump(mode="json"), "run_dir": {str(run_dir)!r},
                               "data": load_job_data(spec), "inject_fault": json.loads(sys.argv[2])}})
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, spec.model_dump_json(), json.dumps(fault)], capture_output=True
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]  # SIGKILL


@pytest.mark.parametrize("method", ["dann", "mean_teacher"])
def test_kill_at_random_step_then_resume_matches(tmp_path, method):
    spec = spec_from_dict(synthetic_spec(method={"name": method}, **OVER))
    full = run_inprocess(tmp_path / "full", spec)
    kill_at = random.Random(method).randint(21, 59)
    run_killed(
        tmp_path / "part", spec, {"step": kill_at, "where": "step", "marker": str(tmp_path / "m")}
    )
    assert latest_checkpoint(tmp_path / "part").name == f"checkpoint_{(kill_at // 20) * 20:08d}"
    resumed = run_inprocess(tmp_path / "part", spec)
    assert resumed["resumed_from"] == (kill_at // 20) * 20
    assert resumed["target_loss"] == pytest.approx(full["target_loss"], abs=1e-6)
    assert resumed["target_acc"] == full["target_acc"]


def test_kill_during_checkpoint_write_keeps_previous(tmp_path):
    spec = spec_from_dict(synthetic_spec(**OVER))
    full = run_inprocess(tmp_path / "full", spec)
    run_killed(
        tmp_path / "part", spec, {"step": 40, "where": "checkpoint", "marker": str(tmp_path / "m")}
    )
    leftovers = list((tmp_path / "part").glob(".tmp-checkpoint_00000040-*"))
    assert leftovers and (leftovers[0] / "model.safetensors").is_file()  # half-written, never named
    assert latest_checkpoint(tmp_path / "part").name == "checkpoint_00000020"
    resumed = run_inprocess(tmp_path / "part", spec)
    assert resumed["resumed_from"] == 20
    assert resumed["target_loss"] == pytest.approx(full["target_loss"], abs=1e-6)
    assert not list((tmp_path / "part").glob(".tmp-*"))  # cleaned on the next checkpoint
