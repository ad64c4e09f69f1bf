"""Killed processes lose nothing: a run SIGKILLed at a random step, or in the middle of writing
a checkpoint, resumes to exactly the result of an uninterrupted run (CPU, same seed)."""

import json
import random
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import synthetic_spec
from shiftray.config.load import spec_from_dict
from shiftray.data.loading import load_job_data
from shiftray.train.checkpoint import latest_checkpoint
from shiftray.train.loop import train_loop_per_worker
from shiftray.train.run import LoopConfig

OVER = {
    "train__steps": 60,
    "train__checkpoint_every": 20,
    "train__eval_every": 20,
    "train__keep_checkpoints": 5,
    "resources__torch_threads": 1,  # the killed subprocess and this process reduce alike
}


def run_inprocess(run_dir, spec):
    data = load_job_data(spec)
    return train_loop_per_worker(LoopConfig(spec, run_dir, data))


def run_killed(run_dir, spec, fault):
    code = textwrap.dedent(
        f"""
        import json, sys
        from shiftray.config.schema import JobSpec
        from shiftray.data.loading import load_job_data
        from pathlib import Path
        from shiftray.train.hooks import KillOnce
        from shiftray.train.loop import train_loop_per_worker
        from shiftray.train.run import LoopConfig
        spec = JobSpec.model_validate(json.loads(sys.argv[1]))
        hook = KillOnce(**json.loads(sys.argv[2]))
        train_loop_per_worker(LoopConfig(spec, Path({str(run_dir)!r}), load_job_data(spec),
                                         hooks=(hook,)))
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


def _ranks_agree(per_rank):
    """Run `agree_on_resume` on one thread per simulated rank, `reduce_min` an all-reduce."""
    import threading

    from shiftray.train.checkpoint import agree_on_resume

    n = len(per_rank)
    barrier, box, out = threading.Barrier(n), [], [None] * n

    def reduce_min(v):
        barrier.wait()
        box.append(v)
        barrier.wait()
        m = min(box)
        barrier.wait()
        box.clear() if threading.current_thread().name == "r0" else None
        barrier.wait()
        return m

    def rank(i, local, reported):
        out[i] = agree_on_resume(local, reported, reduce_min)

    threads = [
        threading.Thread(target=rank, args=(i, *a), name=f"r{i}") for i, a in enumerate(per_rank)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return out


@pytest.mark.parametrize(
    "per_rank, step",
    [
        ([([10, 20], None), ([10, 20], None)], 20),  # one node: its newest checkpoint
        ([([], None), ([], None)], None),  # nothing anywhere: start fresh
        ([([10, 20, 40], 30), ([10], 30)], 30),  # node B holds a stale copy: the registered one
        ([([30, 40], 30), ([30, 40], 30)], 40),  # written, not yet registered, on every node
        ([([20, 40], 30), ([40], 30), ([40, 50], 30)], 40),  # the newest every rank holds
        ([([20, 50], 30), ([40], 30)], 30),  # min 40 is not on node A: everyone takes 30
        ([([20, 50], None), ([40], None)], None),  # and with nothing registered, fresh
    ],
)
def test_ranks_on_different_nodes_resume_from_the_same_checkpoint(per_rank, step):
    assert _ranks_agree(per_rank) == [step] * len(per_rank)


def test_saving_a_step_again_replaces_it_by_renames(tmp_path):
    """A checkpoint saved again (a resumed run redoing a step) is never half deleted: the old one
    is renamed aside before the new one is renamed in, then removed."""
    import os
    from types import SimpleNamespace

    from shiftray.train import checkpoint as ck
    from shiftray.train.checkpoint import TrainState, read_state, save_checkpoint

    module = SimpleNamespace(model=torch.nn.Linear(2, 2), method=torch.nn.Linear(1, 1))
    save_checkpoint(tmp_path, module, None, TrainState(10, 20, 0, {"v": 1}), "", {})
    seen = []
    real_rename = os.rename

    def rename(a, b):  # what the directory holds at each rename
        seen.append(sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".tmp")))
        real_rename(a, b)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ck.os, "rename", rename)
        save_checkpoint(tmp_path, module, None, TrainState(10, 20, 0, {"v": 2}), "", {})
    assert seen[0] == ["checkpoint_00000010"] and seen[1][0].startswith(".old-checkpoint_00000010")
    assert read_state(tmp_path / "checkpoint_00000010").metrics == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_00000010"]


def test_a_kill_between_the_two_renames_loses_nothing(tmp_path):
    from types import SimpleNamespace

    from shiftray.train.checkpoint import (
        TrainState,
        latest_checkpoint,
        prune_checkpoints,
        read_state,
        save_checkpoint,
    )

    module = SimpleNamespace(model=torch.nn.Linear(2, 2), method=torch.nn.Linear(1, 1))
    for step in (10, 20):
        save_checkpoint(tmp_path, module, None, TrainState(step, 30, 0, {"v": step}), "", {})
    (tmp_path / "checkpoint_00000020").rename(tmp_path / ".old-checkpoint_00000020-1a2b3c4d")
    prune_checkpoints(tmp_path, 2)  # as after the next save: puts it back, never deletes it
    assert read_state(latest_checkpoint(tmp_path)).metrics == {"v": 20}
    assert not list(tmp_path.glob(".old-*"))
