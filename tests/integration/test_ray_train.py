"""Ray Train end to end (one Ray session for the module; the few slow tests live here)."""

import json

import pytest
from conftest import synthetic_spec
from shiftray.config.load import spec_from_dict
from shiftray.train.checkpoint import list_checkpoints

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    import ray
    from shiftray.train.launch import ensure_ray

    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_two_workers_stay_in_sync_and_evaluate_everything(ray_session, tmp_path):
    from shiftray.train.launch import fit

    spec = spec_from_dict(
        synthetic_spec(
            name="ddp", resources={"num_workers": 2}, tracking={"wandb": "offline", "output_dir": str(tmp_path)},
            train__steps=30, train__eval_every=15, train__checkpoint_every=15,
            data__options={"n": 301, "dim": 8},  # odd size: no padding, no duplicates
        )
    )  # fmt: skip
    result = fit(spec)
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
