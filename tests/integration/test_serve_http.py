"""Serving on a real Ray Serve behind HAProxy, over real HTTP and gRPC: digits DANN and ERM runs
trained here (short), predictions against the offline model on the whole USPS test set (KServe
V1, OIP JSON, OIP binary through tritonclient, OIP gRPC through tritonclient), bad input,
multiplexing with batching, the shift score and drift, a model that cannot load, LoRA bases,
raw text, API keys, load shedding, a hostile image's memory, and a killed replica."""

import base64
import io
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
APP = {"application": "shiftray"}  # gRPC: which application (Serve routes by this metadata)


def _data_dir() -> Path:
    d = os.environ.get("SHIFTRAY_DATA_DIR")
    if d and (Path(d) / "usps" / "usps.h5").is_file():
        return Path(d)
    if os.environ.get("SHIFTRAY_REQUIRE_DATA") == "1":
        pytest.fail(f"SHIFTRAY_REQUIRE_DATA=1 but no benchmark files under {d!r}")
    pytest.skip("benchmark data not available (set SHIFTRAY_DATA_DIR)")


def _train(spec_path: str, run_dir: Path, overrides: list[str]):
    from shiftray.config.load import load_spec
    from shiftray.data.loading import load_job_data
    from shiftray.train.loop import train_loop_per_worker
    from shiftray.train.run import LoopConfig

    spec = load_spec(ROOT / spec_path, overrides + ["tracking.wandb=disabled"])
    data = load_job_data(spec)
    run_dir.mkdir(parents=True)
    train_loop_per_worker(LoopConfig(spec, run_dir, data))
    return data


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A short MNIST->USPS DANN run and ERM run (in this process, before Ray starts)."""
    _data_dir()
    root = tmp_path_factory.mktemp("models")
    short = ["train.eval_every=500", "train.checkpoint_every=500"]
    data = _train("jobs/digits/mnist-usps-dann.yaml", root / "dann", short + ["train.steps=1000"])
    _train("jobs/digits/mnist-usps-erm.yaml", root / "erm", short + ["train.steps=500"])
    broken = root / "broken"  # a run whose weights were cut short on disk
    shutil.copytree(root / "dann", broken)
    for ckpt in broken.glob("checkpoint_*"):
        weights = ckpt / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    _more_models(root, tmp_path_factory.mktemp("bases"))
    return root, data


def _more_models(root: Path, work: Path) -> None:
    """Two LoRA adapters of one test_vit base (two target domains) and a tiny-BERT text model."""
    from conftest import lora_spec_dict, make_text_dir, make_vit_base, synthetic_spec
    from shiftray.config.load import spec_from_dict
    from shiftray.data.loading import load_job_data
    from shiftray.train.loop import train_loop_per_worker
    from shiftray.train.run import LoopConfig

    base, text = make_vit_base(work / "vit.safetensors"), make_text_dir(work)
    specs = {
        name: lora_spec_dict(base, name, data__options__angle=angle)
        for name, angle in (("lora_b", 30.0), ("lora_c", 75.0))
    }
    specs["reviews"] = synthetic_spec(**{
        "name": "reviews", "model": {"backbone": f"hf/{text / 'bert'}", "pretrained": True, "bottleneck_dim": 16},
        "data": {"benchmark": "table", "source": "a", "target": "b",
                 "options": {"path": str(text / "reviews.csv"), "text": "review", "label": "rating",
                             "domain": "condition", "max_length": 16}},
        "optim": {"name": "adamw", "lr": 0.003, "schedule": "constant"}, "train__batch_size": 16,
    })  # fmt: skip
    for name, d in specs.items():
        spec = spec_from_dict(d)
        (root / name).mkdir()
        train_loop_per_worker(LoopConfig(spec, root / name, load_job_data(spec)))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """A keys file made by the CLI: 'reader' may call dann only, 'admin' every model."""
    import subprocess
    import sys

    path, out = tmp_path_factory.mktemp("keys") / "keys.yaml", {}
    shiftray = str(Path(sys.executable).parent / "shiftray")
    for name, models in (("reader", ["--models", "dann"]), ("admin", ["--all-models"])):
        cmd = [shiftray, "keys", "add", str(path), "--name", name, *models]
        out[name] = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    return path, out


@pytest.fixture(scope="module")
def served(digits, keys):
    """One Ray Serve (HAProxy ingress, HTTP and gRPC) with three applications: every model at
    "/", the DANN model with API keys at "/secure", and a killable two-replica one at "/kill"."""
    from shiftray.serving.local import free_port, serving_environment

    serving_environment()
    import ray
    from ray import serve
    from shiftray.serving import build_app
    from shiftray.serving.protocols.oip_grpc import SERVICER

    root, data = digits
    ray.init(num_cpus=8, include_dashboard=False)
    port, grpc_port = free_port(), free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                grpc_options={"port": grpc_port, "grpc_servicer_functions": [SERVICER]})  # fmt: skip
    args = {"models_root": str(root), "max_batch_size": 16, "drift_window": 256,
            "drift_every_s": 0.5, "threads": 1, "max_models_per_replica": 8,
            "max_queued_requests": 64}  # fmt: skip  # the tests' bursts of 32 calls fit
    serve.run(build_app(args), name="shiftray", route_prefix="/")
    secure = {"models": {n: str(root / n) for n in ("dann", "erm")}, "threads": 1,
              "auth": {"keys_file": str(keys[0])}}  # fmt: skip
    serve.run(build_app(secure), name="secure", route_prefix="/secure")
    yield f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", root, data
    serve.shutdown()
    ray.shutdown()


def offline(run_dir: Path, x: np.ndarray) -> np.ndarray:
    from shiftray.models.load import load_trained_model

    model, _ = load_trained_model(run_dir)
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x))[0], 1).numpy()


def v1(base: str, name: str, instances, **kw) -> requests.Response:
    return requests.post(f"{base}/v1/models/{name}:predict", json={"instances": instances}, **kw)


def test_every_protocol_agrees_with_the_offline_model_on_the_whole_usps_test_set(served):
    """KServe V1, OIP JSON, OIP binary (tritonclient.http) and OIP gRPC (tritonclient.grpc)."""
    import tritonclient.grpc as tg
    import tritonclient.http as th

    base, grpc_addr, root, data = served
    x = data.target_test.x
    want = offline(root / "dann", x).argmax(1)
    got: dict[str, list[int]] = {"v1": [], "v2": [], "binary": [], "grpc": []}
    http, grpc = th.InferenceServerClient(base.split("//")[1]), tg.InferenceServerClient(grpc_addr)
    for i in range(0, len(x), 200):
        chunk = x[i : i + 200]
        r = v1(base, "dann", chunk.tolist())
        assert r.status_code == 200, r.text
        got["v1"] += [p["index"] for p in r.json()["predictions"]]
        body = {"inputs": [{"name": "input", "shape": list(chunk.shape), "datatype": "FP32",
                            "data": chunk.ravel().tolist()}], "outputs": [{"name": "index"}]}  # fmt: skip
        r = requests.post(f"{base}/v2/models/dann/infer", json=body)
        assert r.status_code == 200, r.text
        (out,) = r.json()["outputs"]
        assert out["name"] == "index" and out["shape"] == [len(chunk)]
        got["v2"] += out["data"]
        for key, client, module in (("binary", http, th), ("grpc", grpc, tg)):
            inp = module.InferInput("input", list(chunk.shape), "FP32")
            inp.set_data_from_numpy(chunk)
            headers = APP if key == "grpc" else None
            got[key] += client.infer("dann", [inp], headers=headers).as_numpy("index").tolist()
    assert len(got["v1"]) == len(x) == 2007
    for key, indices in got.items():
        assert (np.array(indices) == want).all(), key
    assert http.is_model_ready("dann") and grpc.is_server_live(headers=APP)
    assert grpc.is_server_ready(headers=APP)
    meta = grpc.get_model_metadata("dann", as_json=True, headers=APP)
    assert meta["inputs"][0]["shape"] == ["-1", "1", "28", "28"]


def _png(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _bad_requests(base: str) -> list[tuple[str, str, dict]]:
    """(kind, url, requests kwargs) of malformed requests."""
    p = f"{base}/v1/models/dann:predict"
    j = {"headers": {"content-type": "application/json"}}
    v2 = f"{base}/v2/models/dann/infer"
    big = [[1e300] * 28] * 28
    return [
        ("invalid JSON", p, {"data": b'{"instances": [', **j}),
        ("missing field", p, {"json": {"inputs": []}}),
        ("empty batch", p, {"json": {"instances": []}}),
        ("batch over the limit", p, {"json": {"instances": [[[0.0] * 28] * 28] * 300}}),
        ("wrong shape", p, {"json": {"instances": [[0.0] * 10]}}),
        ("wrong dtype", p, {"json": {"instances": [[["a"] * 28] * 28]}}),
        ("NaN", p, {"data": b'{"instances": [[' + b",".join([b"NaN"] * 28) + b"]]}", **j}),
        ("Infinity", p, {"data": b'{"instances": [' + b"[1e999]" + b"]}", **j}),
        ("overflows float32", p, {"json": {"instances": [big]}}),
        ("V2 FP64 overflows float32", v2, {"json": {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP64", "data": [1e300] * 784}]}}),
        ("not an image", p, {"json": {"instances": [{"b64": base64.b64encode(b"\x89PNG junk").decode()}]}}),
        ("not base64", p, {"json": {"instances": [{"b64": "%%%"}]}}),
        ("body over the limit", p, {"data": b" " * (9 * 1024 * 1024), **j}),
        ("wrong content type", p, {"data": b"instances=1", "headers": {"content-type": "application/x-www-form-urlencoded"}}),
        ("compressed", p, {"data": b"\x1f\x8b", "headers": {"content-type": "application/json", "content-encoding": "gzip"}}),
        ("unknown model", f"{base}/v1/models/nope:predict", {"json": {"instances": [[0.0]]}}),
        ("path-like name", f"{base}/v1/models/..%2F..%2Fetc%2Fpasswd:predict", {"json": {"instances": [[0.0]]}}),
        ("absolute path name", f"{base}/v1/models/%2Fetc%2Fpasswd:predict", {"json": {"instances": [[0.0]]}}),
        ("V2 wrong tensor", v2, {"json": {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0]}]}}),
        ("V2 wrong datatype", v2, {"json": {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "STRING", "data": [0] * 784}]}}),
        ("V2 short binary", v2, {"data": b'{"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"FP32","parameters":{"binary_data_size":3136}}]}' + b"\0" * 100,
                                 "headers": {"content-type": "application/octet-stream", "inference-header-content-length": "106"}}),
    ]  # fmt: skip


def _replicas(app: str = "shiftray") -> dict[str, int]:
    """Serve replica actor name -> its process id."""
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith(f"SERVE_REPLICA::{app}#")]  # fmt: skip
    return {n: _pid(ray.get_actor(n, namespace="serve")) for n in names}


def _pid(actor) -> int:
    import ray

    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def test_bad_input_gets_a_4xx_json_error_and_valid_requests_keep_working(served):
    base, _, root, data = served
    before = _replicas()
    x = data.target_test.x[:7]
    want = offline(root / "dann", x).argmax(1)
    bad = _bad_requests(base)
    jobs = [("valid", None, None)] + [b for b in bad for _ in range(5)]
    jobs = [j for pair in zip(jobs, [("valid", None, None)] * len(jobs), strict=True) for j in pair]
    assert len(bad) >= 12 and len(jobs) >= 100

    def send(job):
        kind, url, kwargs = job
        if kind == "valid":
            return kind, v1(base, "dann", x.tolist())
        return kind, requests.post(url, **kwargs)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, jobs))
    statuses: dict[str, set[int]] = {}
    for kind, r in answers:
        statuses.setdefault(kind, set()).add(r.status_code)
        assert r.status_code < 500, (kind, r.status_code, r.text)
        if kind == "valid":
            assert r.status_code == 200
            assert [p["index"] for p in r.json()["predictions"]] == want.tolist()
        else:
            assert 400 <= r.status_code < 500 and isinstance(r.json()["error"], str), (kind, r.text)
    assert statuses["invalid JSON"] == statuses["NaN"] == {400}
    assert statuses["missing field"] == statuses["overflows float32"] == {422}
    assert statuses["V2 FP64 overflows float32"] == {422}
    assert statuses["body over the limit"] == {413} and statuses["wrong content type"] == {415}
    assert statuses["compressed"] == {415}
    assert statuses["unknown model"] == statuses["path-like name"] == {404}
    assert _replicas() == before  # no replica restarted
    drift = requests.get(f"{base}/v1/models/dann/drift").json()
    assert drift["seen"] > 0 and drift["mean_shift_score"] == drift["mean_shift_score"]  # no NaN


def test_two_models_share_a_replica_under_batching_and_never_mix(served):
    from ray import serve

    base, _, root, data = served
    x = data.target_test.x[:64]
    probs = {m: offline(root / m, x) for m in ("dann", "erm")}
    assert (probs["dann"].argmax(1) != probs["erm"].argmax(1)).any()  # the models differ
    handle = serve.get_deployment_handle("ModelServer", app_name="shiftray")
    jobs = [("dann" if i % 2 else "erm", i % 60, 1 + i % 4) for i in range(160)]

    def call(job):
        name, start, n = job
        return job, handle.predict.remote(name, x[start : start + n]).result()

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(call, jobs))
    for (name, start, n), out in results:
        assert out.model == name
        np.testing.assert_allclose(out.probabilities, probs[name][start : start + n], atol=1e-5)
    assert max(out.batch_rows for _, out in results) > 4  # batches held several requests
    assert len({out.replica for _, out in results}) == 1  # one replica served both models
    with ThreadPoolExecutor(16) as pool:  # and over HTTP, interleaved
        http = list(pool.map(lambda j: (j, v1(base, j[0], x[j[1] : j[1] + j[2]].tolist())), jobs[:48]))
    for (name, start, n), r in http:
        assert r.json()["model"] == name
        got = np.array([p["probabilities"] for p in r.json()["predictions"]])
        np.testing.assert_allclose(got, probs[name][start : start + n], atol=1e-5)


def _auc(inside: np.ndarray, outside: np.ndarray) -> float:
    """ROC-AUC of 'outside scores higher' (Mann-Whitney U, ties count half)."""
    diff = outside[:, None] - inside[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def _scores(base: str, name: str, x: np.ndarray) -> np.ndarray:
    out = []
    for i in range(0, len(x), 128):
        r = v1(base, name, x[i : i + 128].tolist())
        out += [p["shift_score"] for p in r.json()["predictions"]]
    return np.array(out)


def _drift(base: str, name: str, until_seen: int) -> dict:
    for _ in range(100):
        d = requests.get(f"{base}/v1/models/{name}/drift").json()
        assert "seen" in d, d
        if d["seen"] >= until_seen and d["mmd2"] is not None:
            return d
        time.sleep(0.2)
    raise AssertionError(f"no drift result: {d}")


def test_shift_score_separates_other_domains_and_drift_rises(served):
    from shiftray.config.load import load_spec
    from shiftray.data.loading import load_job_data

    base, _, root, data = served
    usps = data.target_test.x[:512]
    noise = np.random.default_rng(0).random(usps.shape).astype(np.float32)
    mnist = load_job_data(load_spec(ROOT / "jobs/digits/usps-mnist-erm.yaml")).target_test.x[:512]
    seen0 = requests.get(f"{base}/v1/models/dann/drift").json()["seen"]
    s_usps = _scores(base, "dann", usps)
    on_target = _drift(base, "dann", seen0 + 512)
    s_noise, s_mnist = _scores(base, "dann", noise), _scores(base, "dann", mnist)
    off_target = _drift(base, "dann", seen0 + 1536)  # the window: the last 256, MNIST
    assert _auc(s_usps, s_noise) >= 0.9, (_auc(s_usps, s_noise), _auc(s_usps, s_mnist))
    assert _auc(s_usps, s_mnist) >= 0.85, _auc(s_usps, s_mnist)
    assert off_target["mmd2"] > 2 * on_target["mmd2"] and off_target["drifted"] is True
    assert off_target["mean_shift_score"] > on_target["mean_shift_score"] + 0.2


def test_a_model_that_cannot_load_is_not_ready_and_the_others_are_served(served):
    base, _, _, data = served
    card = requests.get(f"{base}/v1/models/broken").json()
    assert card["ready"] is False and card["reason"]  # cut-short weights: unreadable header
    assert "labels" not in card
    assert requests.get(f"{base}/v2/models/broken/ready").status_code == 503
    r = v1(base, "broken", data.target_test.x[:1].tolist())
    assert r.status_code == 503 and "not ready" in r.json()["error"]
    ready = requests.get(f"{base}/v2/health/ready")
    assert ready.status_code == 200 and "broken" in ready.json()["not_ready"]
    assert requests.get(f"{base}/v2/models/dann/ready").json()["ready"] is True
    listed = requests.get(f"{base}/v1/models").json()["models"]
    assert listed == ["broken", "dann", "erm", "lora_b", "lora_c", "reviews"]
    schema = requests.get(f"{base}/openapi.json").json()
    assert "/v1/models/{name}:predict" in schema["paths"] and "/v2/models/{name}/infer" in schema["paths"]


def test_the_docs_page_works_offline(served):
    """/docs loads Swagger UI's script and style from the server itself, not a CDN."""
    import re

    base = served[0]
    page = requests.get(f"{base}/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/docs/assets/") for a in assets), assets
    for a in assets:
        r = requests.get(f"{base}{a}")
        assert r.status_code == 200 and len(r.content) > 500, a
    assert "cdn" not in page.text.lower()


def test_per_domain_lora_adapters_share_one_base_on_the_replica(served):
    """Two adapters of one base, each answering with its own model; the replica holds the base
    once; the cards name the base both were trained on."""
    from ray import serve

    base, _, root, _ = served
    x = np.random.default_rng(0).random((12, 1, 8, 8), dtype=np.float32)
    got = {}
    for name in ("lora_b", "lora_c"):
        r = v1(base, name, x.tolist())
        assert r.status_code == 200, r.text
        got[name] = np.array([p["probabilities"] for p in r.json()["predictions"]])
        np.testing.assert_allclose(got[name], offline(root / name, x), atol=1e-5)  # merged offline
    assert np.abs(got["lora_b"] - got["lora_c"]).max() > 1e-3
    cards = [requests.get(f"{base}/v1/models/{n}").json() for n in ("lora_b", "lora_c")]
    shas = {c["training"]["lora_base_sha256"] for c in cards}
    assert len(shas) == 1
    handle = serve.get_deployment_handle("ModelServer", app_name="shiftray")
    held = handle.shared_bases.remote().result()
    assert {"lora_b", "lora_c"} <= set(held["loaded"])
    assert list(held["bases"]) == [shas.pop()[:12]]  # one copy of the base for both


def test_a_text_model_answers_raw_text(served):
    import tritonclient.http as th
    from shiftray.models.text import tokenize
    from shiftray.serving.catalog import inspect_model

    base, _, root, _ = served
    texts = ["good great pill helped", "awful pain mood sleep sad", "fine cycle"]
    r = v1(base, "reviews", texts)
    assert r.status_code == 200, r.text
    card = inspect_model("reviews", root / "reviews")
    want = offline(root / "reviews", tokenize(texts, card.input.tokenizer, 16))
    got = np.array([p["probabilities"] for p in r.json()["predictions"]])
    np.testing.assert_allclose(got, want, atol=1e-5)
    body = {"inputs": [{"name": "input", "shape": [3], "datatype": "BYTES", "data": texts}]}
    r2 = requests.post(f"{base}/v2/models/reviews/infer", json=body)
    assert r2.status_code == 200, r2.text
    labels = next(o for o in r2.json()["outputs"] if o["name"] == "label")["data"]
    assert labels == [p["label"] for p in r.json()["predictions"]]
    inp = th.InferInput("input", [3], "BYTES")  # binary BYTES: length-prefixed UTF-8
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    result = th.InferenceServerClient(base.split("//")[1]).infer("reviews", [inp])
    assert [b.decode() for b in result.as_numpy("label")] == labels
    meta = requests.get(f"{base}/v2/models/reviews").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "BYTES", "shape": [-1]}]
    for bad in ([3], [""], [["good"]]):
        r = v1(base, "reviews", bad)
        assert r.status_code == 422 and "error" in r.json(), r.text


def test_api_keys_guard_http_and_grpc(served, keys):
    import grpc
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    base, grpc_addr, _, data = served
    secure, x = f"{base}/secure", data.target_test.x[:2].tolist()
    reader, admin = keys[1]["reader"], keys[1]["admin"]
    assert v1(secure, "dann", x).status_code == 401
    assert v1(secure, "dann", x, headers={"authorization": "Bearer sr_nope_nope"}).status_code == 401
    assert v1(secure, "dann", x, headers={"authorization": f"Bearer {reader}"}).status_code == 200
    assert v1(secure, "dann", x, headers={"x-api-key": reader}).status_code == 200
    denied = v1(secure, "erm", x, headers={"x-api-key": reader})
    assert denied.status_code == 403 and reader not in denied.text
    assert v1(secure, "erm", x, headers={"x-api-key": admin}).status_code == 200
    listed = requests.get(f"{secure}/v1/models", headers={"x-api-key": reader}).json()
    assert listed == {"models": ["dann"]}
    assert requests.get(f"{secure}/v2/health/ready").status_code == 200  # open
    client = tg.InferenceServerClient(grpc_addr)
    inp = tg.InferInput("input", [2, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(np.asarray(x, np.float32))
    app = {"application": "secure"}
    for headers, code in (({}, grpc.StatusCode.UNAUTHENTICATED),
                          ({"x-api-key": reader}, None),
                          ({"authorization": f"Bearer {reader}"}, None)):  # fmt: skip
        try:
            client.infer("dann", [inp], headers=app | headers)
            assert code is None
        except InferenceServerException as e:
            assert e.status() == str(code), e
    with pytest.raises(InferenceServerException, match="PERMISSION_DENIED"):
        client.infer("erm", [inp], headers=app | {"x-api-key": reader})


def test_a_hostile_image_costs_the_replica_no_memory(served, tmp_path):
    """A ~200-byte 40,000 x 1 PNG sent to a 224-px image-folder model: the replica's peak RSS
    (VmHWM, reset before the request) rises by <= 50 MB, and the answer is a 4xx or a 200."""
    import sys

    from ray import serve
    from shiftray.serving import build_app

    sys.path.insert(0, str(ROOT / "bench"))
    from serve_load import write_run

    write_run(tmp_path / "wide", "lenet", (3, 224, 224), False)
    serve.run(build_app({"models": {"wide": str(tmp_path / "wide")}, "threads": 1}),
              name="wide", route_prefix="/wide")  # fmt: skip
    base = served[0]
    ok = v1(f"{base}/wide", "wide", [{"b64": _png(np.zeros((224, 224, 3), np.uint8))}])
    assert ok.status_code == 200, ok.text
    (pid,) = _replicas("wide").values()
    buf = io.BytesIO()
    Image.new("RGB", (40_000, 1)).save(buf, format="PNG", optimize=True)
    assert len(buf.getvalue()) < 1000
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak to the current RSS
    before = _vm(pid, "VmHWM")
    r = v1(f"{base}/wide", "wide", [{"b64": base64.b64encode(buf.getvalue()).decode()}] * 4)
    rise = (_vm(pid, "VmHWM") - before) / 2**20
    assert r.status_code in (200, 422), r.text
    assert rise <= 50, f"peak RSS rose {rise:.0f} MB"
    serve.delete("wide")


def _vm(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def test_past_its_queue_a_replica_sheds_load_with_503_and_recovers(served):
    """~4x what the replica sustains, open loop, for 20 s: every answer is a 200 or a 503 with
    Retry-After (Serve's backpressure: never another 5xx), and once the load stops it answers
    200 again."""
    import asyncio

    import aiohttp

    base, _, _, data = served
    url = f"{base}/v1/models/dann:predict"
    body = {"instances": data.target_test.x[:1].tolist()}
    rate = _sustained(url, body) * 4
    codes: dict[int, int] = {}

    async def fire(session, rejected_json):
        async with session.post(url, json=body) as r:
            codes[r.status] = codes.get(r.status, 0) + 1
            if r.status == 503:
                rejected_json.append((await r.text(), r.headers.get("retry-after")))

    async def drive():
        rejected: list = []
        conn = aiohttp.TCPConnector(limit=512)
        async with aiohttp.ClientSession(connector=conn) as session:
            tasks, t0 = [], time.monotonic()
            for i in range(int(rate * 20)):
                await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                tasks.append(asyncio.create_task(fire(session, rejected)))
            await asyncio.gather(*tasks)
        return rejected

    rejected = asyncio.run(drive())
    assert set(codes) <= {200, 503} and codes.get(503, 0) > 0, codes
    assert all(after == "1" and text for text, after in rejected[:50])
    for _ in range(50):  # recovered
        if requests.post(url, json=body).status_code == 200:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no 200 after the load stopped")


def _sustained(url: str, body: dict) -> float:
    """Requests per second the endpoint answers with 16 clients for 3 s."""
    done, stop = [0], time.monotonic() + 3

    def client():
        s = requests.Session()
        while time.monotonic() < stop:
            if s.post(url, json=body).status_code == 200:
                done[0] += 1

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / 3


def test_a_killed_replica_costs_no_500_and_the_endpoint_keeps_answering(served):
    """Two replicas under load; one is SIGKILLed mid-stream. HAProxy replays what the dead one
    did not answer on the other (predictions are idempotent): no answer is a 500 (a 503 would
    be acceptable), nobody waits past the timeout, and answers keep coming after the kill."""
    from ray import serve
    from shiftray.serving import build_app

    base, _, root, data = served
    args = {"models": {"dann": str(root / "dann")}, "replicas": 2, "max_batch_size": 4,
            "threads": 1, "request_timeout_s": 20}  # fmt: skip
    serve.run(build_app(args), name="kill", route_prefix="/kill")
    victim = sorted(_replicas("kill").values())[0]
    x, stop = data.target_test.x[:1], threading.Event()
    log: list[tuple[float, int, float, str]] = []  # (start, status, seconds, body)

    def client():
        s = requests.Session()
        while not stop.is_set():
            t0 = time.monotonic()
            r = s.post(f"{base}/kill/v1/models/dann:predict", json={"instances": x.tolist()})
            log.append((t0, r.status_code, time.monotonic() - t0, r.text[:200]))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    _until(lambda: sum(e[1] == 200 for e in log) >= 50)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    _until(lambda: sum(e[1] == 200 and e[0] > killed_at + 1 for e in log) >= 50)
    stop.set()
    for t in threads:
        t.join(60)
    bad = [e for e in log if e[1] != 200]
    assert all(e[1] == 503 for e in bad), bad[:5]  # no 500, no other 5xx
    assert len(bad) <= 8, bad[:5]  # at most the requests in flight
    assert max(e[2] for e in log) < 20 + 5  # nobody waited past the request timeout
    serve.delete("kill")


def _until(condition, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _reference(base: str, x: np.ndarray) -> list[int]:
    r = v1(base, "dann", x.tolist())
    assert r.status_code == 200, r.text
    return [p["index"] for p in r.json()["predictions"]]


def test_fuzz_every_route_generated_from_the_openapi_schema(served):
    """schemathesis generates requests from /openapi.json, valid and invalid by the schema,
    >= 1,000 per protocol (KServe V1 and OIP V2): no answer is a 5xx (but a 503 with JSON under
    load), every 4xx is a JSON error, and a valid request keeps its answer throughout."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    base, _, _, data = served
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    x = data.target_test.x[:3]
    want, counts = _reference(base, x), {}

    def check(case) -> None:
        r = case.call(base_url=base, timeout=60)
        counts[case.path] = counts.get(case.path, 0) + 1
        assert r.status_code < 500 or r.status_code == 503, (case.as_curl_command(), r.text)
        if 400 <= r.status_code < 500:
            assert isinstance(r.json().get("error"), str), (case.as_curl_command(), r.text)

    for path, per_model in (("/v1/models/{name}:predict", 250), ("/v2/models/{name}/infer", 250)):
        op = schema[path]["POST"]
        strategies = [op.as_strategy(mode, path_parameters={"name": name})
                      for name in ("dann", "reviews", "lora_b", "nope")
                      for mode in schemathesis.GenerationMode]  # fmt: skip

        @settings(max_examples=per_model * 4, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=st.one_of(strategies))
        def fuzz(case):
            check(case)

        fuzz()
        assert _reference(base, x) == want
    for op in schema.get_all_operations():  # and the other routes, fewer examples each
        op = op.ok()
        if op.method.upper() == "GET":

            @settings(max_examples=25, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            @given(case=op.as_strategy())
            def fuzz_get(case):
                check(case)

            fuzz_get()
    assert counts["/v1/models/{name}:predict"] >= 1000 and counts["/v2/models/{name}/infer"] >= 1000
    assert _reference(base, x) == want


def test_fuzz_the_grpc_endpoint(served):
    """>= 1,000 generated ModelInfer requests (datatypes, shapes, raw and typed contents,
    outputs, model names): every answer is OK or a client-error status code, never INTERNAL or
    UNKNOWN, and a valid request keeps its answer."""
    import grpc
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    base, grpc_addr, _, data = served
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(grpc_addr))
    allowed = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
               grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}  # fmt: skip
    x = data.target_test.x[:3]
    want, seen = _reference(base, x), []
    datatypes = st.sampled_from(["FP32", "FP64", "INT64", "UINT8", "BYTES", "FP16", "BOOL", "X"])
    shapes = st.lists(st.integers(0, 40), max_size=5) | st.just([2, 1, 28, 28])

    @st.composite
    def requests_(draw):
        req = pb.ModelInferRequest(model_name=draw(st.sampled_from(["dann", "reviews", "nope"])))
        t = req.inputs.add(name=draw(st.sampled_from(["input", "x"])), datatype=draw(datatypes),
                           shape=draw(shapes))  # fmt: skip
        if draw(st.booleans()):
            req.raw_input_contents.append(draw(st.binary(max_size=8000)))
        elif t.datatype == "BYTES":
            t.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=64), max_size=4)))
        else:
            t.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=2000)))
        for name in draw(st.lists(st.sampled_from(["index", "label", "logits"]), max_size=2)):
            req.outputs.add(name=name)
        return req

    @settings(max_examples=1000, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(req=requests_())
    def fuzz(req):
        try:
            stub.ModelInfer(req, timeout=60, metadata=tuple(APP.items()))
            seen.append(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            assert e.code() in allowed, (e.code(), e.details(), req)
            seen.append(e.code())

    fuzz()
    assert len(seen) >= 1000 and grpc.StatusCode.INVALID_ARGUMENT in seen
    assert _reference(base, x) == want
