"""The training loop in-process (no Ray): learning, checkpoint format, exact resume."""

import json
import shutil

import pytest
from conftest import synthetic_spec
from shiftray.config.load import load_spec, spec_from_dict
from shiftray.data.loading import load_domain_data
from shiftray.train.checkpoint import latest_checkpoint, list_checkpoints
from shiftray.train.loop import train_loop_per_worker


def run(tmp_path, name, **over):
    spec = spec_from_dict(synthetic_spec(name=name, **over))
    run_dir = tmp_path / name
    run_dir.mkdir(exist_ok=True)
    data = load_domain_data(spec.data)
    result = train_loop_per_worker(
        {"spec": spec.model_dump(mode="json"), "run_dir": str(run_dir), "data": data}
    )
    return run_dir, result


@pytest.mark.parametrize("method", ["erm", "dann"])
def test_loop_learns_and_writes_run_dir(tmp_path, method):
    params = {} if method == "erm" else {"disc_hidden": [16]}
    run_dir, result = run(
        tmp_path, method, method={"name": method, "params": params}, train__steps=60
    )
    assert result["target_acc"] > 50.0  # 3 classes: chance is ~33
    assert result["eval_count"] == 256
    ckpt = latest_checkpoint(run_dir)
    assert ckpt.name == "checkpoint_00000060"
    names = {p.name for p in ckpt.iterdir()}
    assert {
        "model.safetensors",
        "method.safetensors",
        "optimizer.pt",
        "state.json",
        "spec.yaml",
        "labels.json",
    } <= names
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 60 and state["progress"] == 1.0
    assert load_spec(ckpt / "spec.yaml").method.name == method
    assert json.loads((ckpt / "labels.json").read_text())["classes"] == ["c0", "c1", "c2"]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "target_acc" in r] == [20, 40, 60]
    assert len(list_checkpoints(run_dir)) == 2  # keep_checkpoints=2 pruned the oldest


def test_resume_reproduces_uninterrupted_run(tmp_path):
    full_dir, full = run(tmp_path, "full")
    part_dir, _ = run(tmp_path, "part")
    shutil.rmtree(part_dir / "checkpoint_00000040")  # as if stopped after the step-20 checkpoint
    (part_dir / "result.json").unlink()
    resumed_dir, resumed = run(tmp_path, "part")
    assert resumed["resumed_from"] == 20
    assert resumed["target_acc"] == full["target_acc"]
    assert resumed["target_loss"] == pytest.approx(full["target_loss"], abs=1e-9)
    assert (full_dir / "params_rank0.json").read_text() == (
        part_dir / "params_rank0.json"
    ).read_text()
    steps = [json.loads(x)["step"] for x in (part_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # no duplicated records after the resume


def test_partial_checkpoint_is_never_loaded(tmp_path):
    run_dir, _ = run(tmp_path, "p", train__steps=20)
    (run_dir / ".tmp-checkpoint_00000040-deadbeef").mkdir()  # a write killed half-way
    (run_dir / ".tmp-checkpoint_00000040-deadbeef" / "model.safetensors").write_bytes(b"junk")
    assert latest_checkpoint(run_dir).name == "checkpoint_00000020"
