"""Serving without Ray: input checks, the shift score and drift test by hand, model cards,
the predictor against the offline model, and the body/content-type gate."""

import base64
import io
import json

import numpy as np
import pytest
import torch
from conftest import synthetic_spec
from PIL import Image
from shiftray.config.load import spec_from_dict
from shiftray.data.loading import load_job_data
from shiftray.data.readers.digits import resize_square
from shiftray.evaluate.shift import (
    DriftTest,
    ShiftReference,
    fit_reference,
    load_reference,
    mmd2,
)
from shiftray.models.load import load_trained_model, resolve_checkpoint
from shiftray.serving.args import AppArgs
from shiftray.serving.catalog import inspect_model
from shiftray.serving.inputs import BadInput, InputSpec, v1_instances, v2_tensor
from shiftray.serving.monitor import DriftMonitor
from shiftray.serving.predictor import Predictor
from shiftray.train.loop import train_loop_per_worker
from shiftray.train.run import LoopConfig

GREY = InputSpec.of([1, 28, 28], "digits")
VEC = InputSpec.of([8], "synthetic")


def png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


# -- inputs ------------------------------------------------------------------------------------


def test_grey_png_of_another_size_is_resized_as_the_digits_reader_resizes():
    img = np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)
    got = v1_instances([{"b64": png(img)}], GREY, 8)
    want = resize_square(img[None].astype(np.float32) / 255, 28)
    assert got.shape == (1, 1, 28, 28)
    np.testing.assert_allclose(got[0], want, atol=1e-6)
    same = v1_instances([{"b64": png(np.full((28, 28), 255, np.uint8))}], GREY, 8)
    assert same.min() == 1.0  # no resize at the model's size: exact pixels


def test_arrays_are_accepted_in_the_models_shape_only():
    x = np.random.default_rng(0).random((2, 28, 28))
    assert v1_instances(x.tolist(), GREY, 8).shape == (2, 1, 28, 28)  # (S, S) for grey
    assert v1_instances([list(range(8))], VEC, 8).dtype == np.float32


@pytest.mark.parametrize(
    "instances,spec,message",
    [
        ([], VEC, "no instances"),
        ([[0.0] * 8] * 9, VEC, "over the limit of 8"),
        ([[0.0] * 7], VEC, "shape [7], the model takes [8] (8 features)"),
        ([[0.0] * 7 + ["a"]], VEC, "expected numbers"),
        ([[0.0] * 7 + [float("nan")]], VEC, "NaN or infinite"),
        ([[0.0] * 7 + [float("inf")]], VEC, "NaN or infinite"),
        ([[[0.0, 1.0], [2.0]]], VEC, "rectangular"),
        ([[True] * 8], VEC, "booleans"),
        (["hello"], VEC, "expected list of 8 numbers"),
        ([None], VEC, "got NoneType"),
        ([{"b64": "not base64!"}], GREY, "not valid base64"),
        ([{"b64": base64.b64encode(b"GIF89a nonsense").decode()}], GREY, "not an image"),
        ([{"b64": 3}], GREY, "must be a base64 string"),
        ([{"url": "file:///etc/passwd"}], GREY, '{"b64": "<base64>"}'),
        ([np.zeros((3, 28, 28)).tolist()], GREY, "the model takes [1, 28, 28]"),
    ],
)
def test_bad_instances_say_what_was_wrong(instances, spec, message):
    with pytest.raises(BadInput) as err:
        v1_instances(instances, spec, 8)
    assert message in str(err.value) and err.value.status == 422


def test_v2_tensors_flat_or_nested_and_their_errors():
    x = np.random.default_rng(0).random((3, 8)).astype(np.float32)
    np.testing.assert_array_equal(v2_tensor([3, 8], "FP32", x.ravel().tolist(), VEC, 8), x)
    np.testing.assert_array_equal(v2_tensor([3, 8], "FP64", x.tolist(), VEC, 8), x)
    assert v2_tensor([1, 8], "UINT8", [255] * 8, VEC, 8).max() == 255
    for args, message in [
        (([3, 7], "FP32", [0] * 21), "the model takes [-1, 8]"),
        (([3, 8], "FP32", [0] * 20), "has 20 values"),
        (([1, 8], "INT8", [300] * 8), "do not fit datatype INT8"),
        (([1, 8], "COMPLEX", [0] * 8), "datatype 'COMPLEX'"),
        (([1, 8], "BYTES", ["x"]), "sent to a model of feature vectors"),
        (([0, 8], "FP32", []), "no instances"),
        (([1, -8], "FP32", []), "non-negative"),
    ]:
        with pytest.raises(BadInput, match=message.replace("[", r"\[").replace("]", r"\]")):
            v2_tensor(*args, VEC, 8)
    img = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    got = v2_tensor([1], "BYTES", [png(img)], GREY, 8)
    np.testing.assert_allclose(got[0, 0], img / 255, atol=1e-6)


def test_a_decompression_bomb_is_refused_before_decoding(monkeypatch):
    import shiftray.serving.inputs as inputs

    monkeypatch.setattr(inputs, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(BadInput, match="over the limit of 100 pixels"):
        v1_instances([{"b64": png(np.zeros((11, 11), np.uint8))}], GREY, 8)


# -- shift score and drift, by hand -------------------------------------------------------------


def test_mahalanobis_distance_matches_a_hand_computation():
    means = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    precision = torch.tensor([[1.0, 0.0], [0.0, 0.25]])  # variances 1 and 4
    ref = ShiftReference(means, precision, torch.tensor([0.5, 1.0, 2.0, 3.0]), torch.zeros(4, 2))
    f = torch.tensor([[0.0, 2.0], [3.0, 0.0], [10.0, 0.0]])
    # nearest class mean: sqrt(0 + 4/4) = 1; |3-4| = 1; |10-4| = 6
    np.testing.assert_allclose(ref.distance(f).numpy(), [1.0, 1.0, 6.0], atol=1e-6)
    # share of held-out distances below: 1.0 -> [0.5] = 1/4 (searchsorted left), 6 -> 4/4
    np.testing.assert_allclose(ref.score(f).numpy(), [0.25, 0.25, 1.0])


def test_shift_score_is_uniform_on_the_target_and_near_one_off_it():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(4000, 6, generator=g) * torch.tensor([1, 2, 3, 1, 1, 1.0])
    logits = torch.stack([target[:, 0], -target[:, 0]], 1)  # two pseudo-classes
    ref = fit_reference(target, logits)
    same = ref.score(torch.randn(2000, 6, generator=g) * torch.tensor([1, 2, 3, 1, 1, 1.0]))
    moved = ref.score(torch.randn(2000, 6, generator=g) + 4.0)
    assert abs(float(same.mean()) - 0.5) < 0.05
    assert float(moved.mean()) > 0.95


def test_target_reference_subsamples_rows_not_values():
    from shiftray.evaluate.shift import target_reference

    model = torch.nn.Linear(4, 3)
    seen = []

    class Both(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape))
            return model(x), x

    x = np.random.default_rng(0).random((100, 4)).astype(np.float32)
    ref = target_reference(Both(), x, 16, "cpu", max_rows=40)
    assert ref.means.shape == (3, 4) and sum(s[0] for s in seen) == 40
    assert all(s[1:] == (4,) for s in seen)


def test_mmd2_matches_the_unbiased_estimator_written_out():
    rng = np.random.default_rng(0)
    x, y, gamma = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)) + 1, 0.3

    def k(a, b):
        return np.exp(-gamma * ((a - b) ** 2).sum())

    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
    xy = sum(k(a, b) for a in x for b in y) / 20
    got = mmd2(torch.from_numpy(x), torch.from_numpy(y), gamma)
    assert got == pytest.approx(xx + yy - 2 * xy, rel=1e-9)


def test_drift_test_rises_on_another_domain_and_not_on_the_same():
    g = torch.Generator().manual_seed(0)
    ref = fit_reference(torch.randn(3000, 4, generator=g), torch.zeros(3000, 2))
    test = DriftTest.build(ref, 128)
    same_stat, same_p = test.test(torch.randn(128, 4, generator=g))
    moved_stat, moved_p = test.test(torch.randn(128, 4, generator=g) + 0.7)
    assert moved_stat > same_stat and moved_p < 0.05 < same_p
    with pytest.raises(ValueError, match="drift window 9999"):
        DriftTest.build(ref, 9999)


def test_monitor_reports_a_partial_window_then_the_test():
    g = torch.Generator().manual_seed(0)
    ref = fit_reference(torch.randn(600, 3, generator=g), torch.zeros(600, 2))
    mon = DriftMonitor(window=64)
    mon.add("m", torch.randn(10, 3, generator=g), np.full(10, 0.5), None)
    assert "10 of 64" in mon.update("m", ref).reason
    mon.add("m", torch.randn(60, 3, generator=g) + 3, np.full(60, 0.99), None)
    res = mon.update("m", ref)
    assert res.window == 64 and res.seen == 70 and res.drifted is True
    assert res.mean_shift_score == pytest.approx((4 * 0.5 + 60 * 0.99) / 64)


def test_a_reference_too_small_for_the_window_is_a_reason_not_a_crash():
    """A model that keeps few held-out target rows reports why it has no drift test; the
    monitor (and the replica's health, which watches it) carries on."""
    g = torch.Generator().manual_seed(0)
    ref = fit_reference(torch.randn(40, 3, generator=g), torch.zeros(40, 2))
    assert DriftTest.max_window(ref) == len(ref.held_features) - len(ref.held_features) // 2
    mon = DriftMonitor(window=64)
    mon.add("m", torch.randn(64, 3, generator=g), np.full(64, 0.5), None)
    res = mon.update("m", ref)
    assert res.mmd2 is None and f"at most {DriftTest.max_window(ref)}" in res.reason


# -- a trained run: shift.safetensors, the card, the predictor ----------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    spec = spec_from_dict(synthetic_spec(name="served"))
    run_dir = tmp_path_factory.mktemp("runs") / "served"
    run_dir.mkdir()
    train_loop_per_worker(LoopConfig(spec, run_dir, load_job_data(spec)))
    return run_dir, spec


def test_training_saves_the_target_reference_with_the_final_model(trained):
    run_dir, spec = trained
    ckpt = resolve_checkpoint(run_dir)
    ref = load_reference(ckpt)
    assert ref is not None and ref.means.shape == (3, 16)  # 3 classes, bottleneck 16
    model, _ = load_trained_model(ckpt)
    data = load_job_data(spec)
    with torch.no_grad():
        _, f = model(torch.from_numpy(data.target_test.x))
    assert 0.2 < float(ref.score(f).mean()) < 0.8  # target test inputs look like the target


def test_predictor_matches_the_offline_model_and_carries_both_signals(trained):
    run_dir, spec = trained
    pred = Predictor(run_dir)
    x = load_job_data(spec).target_test.x[:50]
    model, _ = load_trained_model(run_dir)
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(x))[0], 1).numpy()
    out = pred(x)
    np.testing.assert_allclose(out.probabilities, want, atol=1e-6)
    assert (out.index == want.argmax(1)).all()
    assert out.shift_score.shape == (50,) and out.target_probability.shape == (50,)
    assert ((out.target_probability > 0) & (out.target_probability < 1)).all()


def test_model_cards_refuse_missing_truncated_and_mismatched_weights(trained, tmp_path):
    import shutil

    run_dir, _ = trained
    card = inspect_model("good", run_dir)
    assert card.ready and card.shift_signal == ["mahalanobis", "discriminator"]
    assert card.training["method"] == "dann" and card.input.shape == (8,)
    assert "FileNotFoundError" in inspect_model("gone", tmp_path / "nope").reason
    bad = tmp_path / "bad"
    shutil.copytree(resolve_checkpoint(run_dir), bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # truncated
    card = inspect_model("bad", bad)
    assert not card.ready and card.reason and card.public() == {
        "name": "bad", "ready": False, "reason": card.reason
    }  # fmt: skip
    labels = json.loads((bad / "labels.json").read_text())
    shutil.copy(resolve_checkpoint(run_dir) / "model.safetensors", weights)
    (bad / "labels.json").write_text(json.dumps(labels | {"classes": ["a", "b", "c", "d"]}))
    assert "does not match" in inspect_model("bad", bad).reason  # 4 classes, a 3-class head


def test_app_args_name_models_and_refuse_paths_as_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b.v2").mkdir()
    (tmp_path / ".hidden").mkdir()
    args = AppArgs(models_root=str(tmp_path), models={"c": "runs/x"})
    paths = args.named_paths()
    assert sorted(paths) == ["a", "b.v2", "c"] and paths["c"].startswith("/")
    for name in ("../x", "/etc", "a/b", "", "x" * 65):
        with pytest.raises(ValueError, match="model name"):
            AppArgs(models={name: "runs/x"})
    with pytest.raises(ValueError, match="no models"):
        AppArgs()


# -- the body and content-type gate -------------------------------------------------------------


def _gated_app(**limits):
    from fastapi import FastAPI, Request
    from shiftray.serving.http import BodyGate, install_errors
    from shiftray.serving.protocols.common import parse_json

    app = FastAPI()
    app.add_middleware(BodyGate)
    install_errors(app)
    app.state.args = AppArgs(models={"m": "runs/m"}, **limits)

    @app.post("/p")
    async def p(request: Request) -> dict:
        return {"n": len(parse_json(await request.body())["instances"])}

    return app


def test_body_gate_answers_413_and_415_before_the_app_reads_anything():
    from fastapi.testclient import TestClient

    client = TestClient(_gated_app(max_body_bytes=1024))
    assert client.post("/p", json={"instances": [1, 2]}).json() == {"n": 2}
    big = client.post("/p", content=b'{"instances": [' + b"1," * 600 + b"1]}",
                      headers={"content-type": "application/json"})  # fmt: skip
    assert big.status_code == 413 and "over the limit of 1,024" in big.json()["error"]

    def chunks():  # no Content-Length: counted as it streams
        yield b'{"instances": ['
        for _ in range(300):
            yield b"1,1,"
        yield b"1]}"

    streamed = client.post("/p", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    plain = client.post("/p", content=b"{}", headers={"content-type": "text/plain"})
    assert plain.status_code == 415 and "application/json" in plain.json()["error"]
    gzipped = client.post("/p", content=b"{}", headers={"content-type": "application/json",
                                                         "content-encoding": "gzip"})  # fmt: skip
    assert gzipped.status_code == 415 and "uncompressed" in gzipped.json()["error"]
    binary = {"content-type": "application/octet-stream", "inference-header-content-length": "2"}
    assert client.post("/p", content=b'{"instances": []}', headers=binary).status_code == 200
    bad = client.post("/p", content=b"{", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]


def test_the_replica_sheds_load_through_serves_backpressure():
    """A replica works on two batches and a few more requests, holds max_queued_requests more, and
    refuses the rest at once with 503 + Retry-After (Serve's check, before any Python of ours)."""
    from shiftray.serving.app import build_app

    app = build_app({"models": {"m": "/nowhere"}, "max_batch_size": 8, "max_queued_requests": 3})
    d = app._bound_deployment
    assert d.max_ongoing_requests == 2 * 8 + 8 and d.max_queued_requests == 3
    assert d.backpressure_config.status_code == 503 and d.backpressure_config.retry_after_s == 1
