"""The Python API (`shiftray.load_job`, `fit`, `load`): the path the CLI takes, from a script."""

import inspect

import numpy as np
import pytest
import shiftray
from conftest import make_tree, synthetic_spec
from shiftray.serving.inputs import BadInput


def test_the_api_is_documented_and_typed():
    for fn in (shiftray.load_job, shiftray.fit, shiftray.load, shiftray.tune, shiftray.serve):
        assert fn.__doc__ and len(fn.__doc__.split()) > 12, fn.__name__
    for fn, returns in ((shiftray.load_job, "JobSpec"), (shiftray.fit, "RunResult"),
                        (shiftray.load, "Model")):  # fmt: skip
        assert inspect.signature(fn).return_annotation == returns


def test_fit_load_predict_a_vector_model(tmp_path):
    job = shiftray.load_job(synthetic_spec(name="api"), [f"tracking.output_dir={tmp_path}"])
    run = shiftray.fit(job, ray=False, progress=False)
    assert run.run_dir == tmp_path / "api" and 0 <= run.target_acc <= 100
    assert not any(run.health.values())
    model = shiftray.load(run.run_dir)
    assert model.card["input"]["kind"] == "vector" and list(model.classes) == ["c0", "c1", "c2"]
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    pred = model.predict(x, batch_size=128)  # three batches, concatenated in order
    assert len(pred) == 300 and pred.probabilities.shape == (300, 3)
    assert (pred.index[:7] == model.predict(x[:7]).index).all()  # batching changes no answer
    assert np.allclose(pred.probabilities[200:], model.predict(x[200:]).probabilities, atol=1e-6)
    assert model.features(x[:5]).shape == (5, 16) and pred.shift_score.shape == (300,)
    assert model.predict(x[0]).label.shape == (1,)  # one instance
    with pytest.raises(BadInput, match="shape"):
        model.predict(np.zeros((2, 5), np.float32))
    with pytest.raises(BadInput, match="not finite"):
        model.predict(np.full((1, 8), 1e300))


def test_a_changed_job_is_refused_and_restart_runs_it(tmp_path):
    job = shiftray.load_job(synthetic_spec(name="ch", train__steps=10),
                            [f"tracking.output_dir={tmp_path}"])  # fmt: skip
    shiftray.fit(job, ray=False, progress=False)
    changed = shiftray.load_job(job.model_dump(mode="json"), ["optim.lr=0.5"])
    with pytest.raises(shiftray.api.SpecError, match="optim.lr: 0.05 -> 0.5"):
        shiftray.fit(changed, ray=False, progress=False)
    assert shiftray.fit(changed, ray=False, progress=False, restart=True).metrics["step"] == 10


def test_images_as_files_bytes_and_arrays_give_one_answer(tmp_path):
    make_tree(tmp_path / "imgs")
    job = shiftray.load_job(synthetic_spec(
        name="img", data={"benchmark": "imagefolder", "source": "photo", "target": "night",
                          "options": {"root": str(tmp_path / "imgs"), "image_size": 16}},
        model={"backbone": "lenet", "bottleneck_dim": 8, "backbone_kwargs": {"channels": [4, 8]}},
        train__batch_size=8, train__steps=10, train__eval_every=10, train__checkpoint_every=10,
        tracking={"wandb": "disabled", "output_dir": str(tmp_path)}))  # fmt: skip
    model = shiftray.load(shiftray.fit(job, ray=False, progress=False).run_dir)
    files = sorted((tmp_path / "imgs/night/red").glob("*"))[:3]
    by_path = model.predict(files)
    by_bytes = model.predict([f.read_bytes() for f in files])
    by_array = model.predict(model.inputs(files))
    assert by_path.index.tolist() == by_bytes.index.tolist() == by_array.index.tolist()
    assert np.allclose(by_path.probabilities, by_array.probabilities)
    with pytest.raises(BadInput, match="not an image|could not be decoded|decod"):
        model.predict([b"not an image"])
