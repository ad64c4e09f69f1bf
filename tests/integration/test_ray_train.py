"""Ray Train end to end (one Ray session for the module; the few slow tests live here)."""

import json

import pytest
from conftest import synthetic_spec
from shiftray.config.load import spec_from_dict
from shiftray.train.checkpoint import list_checkpoints

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_session(s3_endpoint):
    import ray
    from shiftray.train.launch import ensure_ray

    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_two_workers_stay_in_sync_and_evaluate_everything(ray_session, tmp_path):
    from shiftray.train.hooks import ParamDigests
    from shiftray.train.launch import fit

    spec = spec_from_dict(
        synthetic_spec(
            name="ddp", resources={"num_workers": 2}, tracking={"wandb": "offline", "output_dir": str(tmp_path)},
            train__steps=30, train__eval_every=15, train__checkpoint_every=15,
            data__options={"n": 301, "dim": 8},  # odd size: no padding, no duplicates
        )
    )  # fmt: skip
    result = fit(spec, hooks=(ParamDigests(),))
    run_dir = result.run_dir
    assert run_dir == tmp_path / "ddp"
    digests = [json.loads((run_dir / f"params_rank{r}.json").read_text()) for r in (0, 1)]
    assert any(k.startswith("method.discriminator") for k in digests[0])
    assert digests[0] == digests[1]  # every parameter, the discriminator's included
    assert result.metrics["eval_count"] == 301
    final = json.loads((run_dir / "result.json").read_text())
    assert final["eval_count"] == 301 and final["step"] == 30
    assert [p.name for p in list_checkpoints(run_dir)] == [
        "checkpoint_00000015",
        "checkpoint_00000030",
    ]
    assert (run_dir / "wandb").is_dir()  # offline W&B run written by rank 0

    # a rerun on the same run directory resumes from its latest checkpoint instead of retraining
    again = fit(spec)
    assert json.loads((again.run_dir / "result.json").read_text())["resumed_from"] == 30


def test_compare_runs_strategies_as_ray_tasks(ray_session, tmp_path):
    import os

    import ray
    from shiftray.compare import compare

    # the embedded Ray runs its workers at normal priority (Ray's default niceness is 15)
    def niceness() -> int:
        return os.nice(0)

    assert ray.get(ray.remote(num_cpus=1)(niceness).remote()) == 0

    spec = spec_from_dict(
        synthetic_spec(
            name="cmp", tracking={"wandb": "disabled", "output_dir": str(tmp_path)}, train__steps=20,
            model={"backbone": "mlp", "backbone_kwargs": {"hidden": [16, 16]}, "bottleneck_dim": 8},
        )
    )  # fmt: skip
    out_dir, table = compare(spec, ["scratch", "feature-extraction", "dann"], seeds=2)
    assert [r["strategy"] for r in table] == ["scratch", "feature-extraction", "dann"]
    runs = json.loads((out_dir / "compare.json").read_text())["runs"]
    assert len(runs) == 6 and all(0 <= r["target_acc"] <= 100 for r in runs)
    assert '<g id="bar-feature-extraction">' in (out_dir / "compare.svg").read_text()
    assert "| feature-extraction |" in (out_dir / "compare.md").read_text()
    assert (out_dir / "cmp-dann-s1" / "result.json").is_file()


def test_worker_killed_mid_run_restarts_from_last_checkpoint(ray_session, tmp_path):
    from shiftray.train.launch import fit

    spec = spec_from_dict(
        synthetic_spec(
            name="ft", resources={"num_workers": 2, "max_failures": 2},
            tracking={"wandb": "disabled", "output_dir": str(tmp_path)},
            train__steps=60, train__eval_every=10, train__checkpoint_every=10, train__keep_checkpoints=10,
        )
    )  # fmt: skip
    fault = {"rank": 1, "step": 25, "where": "step", "marker": str(tmp_path / "killed")}
    from shiftray.train.hooks import KillOnce

    result = fit(spec, hooks=(KillOnce(**fault),))
    assert (tmp_path / "killed").read_text() == "25"  # rank 1 really died at step 25
    final = json.loads((result.run_dir / "result.json").read_text())
    assert final["step"] == 60 and final["resumed_from"] == 20  # redone: 5 steps < one interval
    steps = [int(p.name.split("_")[1]) for p in list_checkpoints(result.run_dir)]
    assert steps == [10, 20, 30, 40, 50, 60]  # contiguous: nothing lost, nothing skipped


def test_s3_checkpoints_resume_on_a_fresh_machine(ray_session, s3_endpoint, tmp_path):
    if s3_endpoint is None:
        pytest.skip("moto is not installed: pip install -e '.[dev]'")
    import boto3
    from shiftray.train.launch import fit

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="ckpts")

    def spec(node, steps):
        return spec_from_dict(
            synthetic_spec(
                name="remote", train__steps=steps, train__eval_every=15, train__checkpoint_every=15,
                tracking={"wandb": "disabled", "output_dir": str(tmp_path / node),
                          "storage_path": "s3://ckpts/runs"},
            )
        )  # fmt: skip

    fit(spec("node1", 30))
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="ckpts", Prefix="runs/remote/")["Contents"]}
    for step in (15, 30):  # train.keep_checkpoints: 2 in the bucket too
        for name in ("model.safetensors", "method.safetensors", "optimizer.pt", "state.json"):
            assert f"runs/remote/checkpoint_{step:08d}/{name}" in keys
    state = s3.get_object(Bucket="ckpts", Key="runs/remote/checkpoint_00000030/state.json")
    assert json.loads(state["Body"].read())["step"] == 30
    # the results beside them (on a cluster rank 0's run directory is on another node)
    from shiftray.train.storage import read_run_file

    assert {"runs/remote/result.json", "runs/remote/metrics.jsonl"} <= keys
    assert json.loads(read_run_file(spec("node1", 30), "result.json"))["step"] == 30
    # another machine: an empty output directory, the same bucket; the run goes on from step 30
    second = fit(spec("node2", 45))
    assert not (tmp_path / "node2" / "remote" / "checkpoint_00000015").exists()  # fetched 30 only
    final = json.loads((second.run_dir / "result.json").read_text())
    assert final["resumed_from"] == 30 and final["step"] == 45
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="ckpts", Prefix="runs/remote/")["Contents"]}
    assert {k.split("/")[2] for k in keys if k.startswith("runs/remote/checkpoint_0")} == {
        "checkpoint_00000030", "checkpoint_00000045"
    }  # fmt: skip
    # `shiftray run --restart` deletes them there too (else Ray would resume from the bucket)
    from shiftray.train.storage import clear_storage

    assert clear_storage(spec("node2", 45)) == "s3://ckpts/runs/remote"
    assert "Contents" not in s3.list_objects_v2(Bucket="ckpts", Prefix="runs/remote/")
    assert clear_storage(spec("node2", 45)) is None


def test_ray_workers_restore_the_best_step_and_surface_input_errors(ray_session, tmp_path):
    """Under Ray Train: early stopping restores the best step on both workers, and a worker's error about the user's input (a SHOT source run trained
    on another domain) reaches the caller as itself, not as Ray's WorkerGroupError."""
    from shiftray.errors import UserInputError
    from shiftray.train.launch import fit, fit_local

    es = {"metric": "source_val_acc", "patience": 2, "min_delta": 50.0}
    spec = spec_from_dict(synthetic_spec(
        name="es", resources={"num_workers": 2}, data__source_val_fraction=0.2,
        finetune={"early_stopping": es}, train__steps=100, train__eval_every=10,
        train__checkpoint_every=50, tracking={"wandb": "disabled", "output_dir": str(tmp_path)}))  # fmt: skip
    result = fit(spec)
    final = json.loads((result.run_dir / "result.json").read_text())
    assert final["model_step"] == 10 and final["step"] == 30
    source = fit_local(spec_from_dict(synthetic_spec(
        name="src", method={"name": "erm"}, train__steps=10,
        tracking={"wandb": "disabled", "output_dir": str(tmp_path)})))  # fmt: skip
    shot = spec_from_dict(synthetic_spec(
        name="shot", method={"name": "shot", "params": {"source_checkpoint": str(source.run_dir)}},
        data__source="b", data__target="a", resources={"num_workers": 2},
        tracking={"wandb": "disabled", "output_dir": str(tmp_path)}))  # fmt: skip
    with pytest.raises(UserInputError, match="source='a'"):
        fit(shot)
