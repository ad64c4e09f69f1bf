"""API keys of the serving endpoint: the keys file and its CLI, the HTTP gate (401/403, open
routes, both header spellings), the gRPC check, and that a key is never stored, echoed or logged."""

import asyncio
import logging
import os
import stat

import pytest
import yaml
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from shiftray.cli import main
from shiftray.serving import auth
from shiftray.serving.args import AppArgs
from shiftray.serving.auth import AuthError, KeyGate, KeyRing, caller, model_in_path
from shiftray.serving.keys import KeysFile, KeysFileError, new_key, read_keys, write_keys

MODELS = ["a", "b", "c"]


def add(capsys, path, name, *which) -> str:
    assert main(["keys", "add", str(path), "--name", name, *which]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # the key, alone on stdout
    return out.strip()


@pytest.fixture
def keys(tmp_path, capsys):
    """alice may call a and b; ops may call every model."""
    path = tmp_path / "secrets" / "keys.yaml"
    alice = add(capsys, path, "alice", "--models", "a,b")
    ops = add(capsys, path, "ops", "--all-models")
    return path, alice, ops


def tiny_app(ring: KeyRing) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    def models(request: Request):
        allowed = ring.models_allowed(caller(request.scope))
        return {"models": [m for m in MODELS if allowed == "*" or m in allowed]}

    @app.post("/v1/models/{name}:predict")
    def predict(name: str, body: dict):
        return {"model": name, "n": len(body["instances"])}

    @app.get("/v2/models/{name}/ready")
    def ready(name: str):
        return {"name": name, "ready": True}

    @app.get("/v2/health/live")
    def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    def server_ready():
        return {"ready": True}

    app.add_middleware(KeyGate, ring=ring)
    return app


@pytest.fixture
def client(keys):
    return TestClient(tiny_app(KeyRing.load(keys[0])))


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_the_file_holds_salted_hashes_only_and_round_trips(tmp_path):
    key, entry = new_key("alice", ["a"])
    _, other = new_key("bob", "*")
    path = tmp_path / "keys.yaml"
    write_keys(path, KeysFile(keys=[entry, other]))
    assert read_keys(path) == KeysFile(keys=[entry, other])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert key not in text and key.split("_", 2)[2] not in text
    assert yaml.safe_load(text)["keys"][1]["models"] == "*"
    assert key.startswith(f"sr_{entry.id}_") and len(key) > 50
    assert entry.salt != other.salt  # a salt per key
    assert [p.name for p in tmp_path.iterdir()] == ["keys.yaml"]  # no temporary file left


def test_cli_add_list_revoke(keys, capsys):
    path, alice, ops = keys
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert alice not in path.read_text() and ops not in path.read_text()
    assert main(["keys", "list", str(path)]) == 0
    out = capsys.readouterr().out
    entry = read_keys(path).keys[0]
    assert "alice" in out and entry.id in out and "a, b" in out and "ops" in out and "*" in out
    assert entry.sha256 not in out and alice not in out
    assert main(["keys", "add", str(path), "--name", "alice", "--all-models"]) == 2
    assert "already has a key named 'alice'" in capsys.readouterr().err
    assert main(["keys", "revoke", str(path), "--name", "alice"]) == 0
    assert [k.name for k in read_keys(path).keys] == ["ops"]
    assert main(["keys", "revoke", str(path), "--name", "alice"]) == 2
    assert "no key named 'alice' (keys: ops)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --models or --all-models, not both
        main(["keys", "add", str(path), "--name", "x", "--models", "a", "--all-models"])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"salt": "zz"}, r"keys\[1\] \(name 'bob'\)\.salt: String should match"),
        ({"models": []}, r"keys\[1\] \(name 'bob'\)\.models: give a non-empty list"),
        ({"name": "alice"}, r"keys: name 'alice' appears more than once"),
        ({"secret": "x"}, r"keys\[1\] \(name 'bob'\)\.secret: Extra inputs"),
    ],
)
def test_a_bad_keys_file_names_the_file_and_the_entry(tmp_path, entry, message):
    path = tmp_path / "keys.yaml"
    raw = KeysFile(keys=[new_key("alice", "*")[1], new_key("bob", ["a"])[1]]).model_dump()
    raw["keys"][1].update(entry)
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(KeysFileError, match=f"keys file {path}: {message}"):
        KeyRing.load(path)
    with pytest.raises(KeysFileError, match="does not exist.*shiftray keys add"):
        KeyRing.load(tmp_path / "nope.yaml")


def test_401_without_a_valid_key(client, keys):
    _, alice, _ = keys
    key_id = alice.split("_")[1]
    unknown = alice.replace(key_id, "0" * 12)
    wrong = alice[:-4] + ("AAAA" if not alice.endswith("AAAA") else "BBBB")
    cases = {
        "an API key is required": {},
        "must be `Bearer <API key>`": {"Authorization": f"Basic {alice}"},
        "malformed": bearer("not-a-shiftray-key"),
        "two different API keys": {**bearer(alice), "x-api-key": unknown},
    }
    cases |= {f"not valid ({i})": bearer(k) for i, k in enumerate([unknown, wrong])}
    for expected, headers in cases.items():
        r = client.post("/v1/models/a:predict", json={"instances": [1]}, headers=headers)
        assert r.status_code == 401, expected
        assert expected.split(" (")[0] in r.json()["error"]
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/v1/models").status_code == 401  # no model, still a key
    assert client.get("/nowhere").status_code == 401  # 401 before 404: paths are not revealed


def test_403_for_a_model_the_key_may_not_call(client, keys):
    _, alice, ops = keys
    for path in ("/v2/models/c/ready", "/v1/models/c:predict"):
        r = client.request("GET" if "ready" in path else "POST", path, headers=bearer(alice),
                           json={"instances": [1]})  # fmt: skip
        assert r.status_code == 403 and r.json() == {"error": "this API key may not call model 'c'"}
        assert "www-authenticate" not in r.headers
    assert client.get("/v2/models/c/ready", headers=bearer(ops)).status_code == 200


def test_allowed_with_either_header_and_models_listed_per_key(client, keys):
    _, alice, ops = keys
    for headers in (bearer(alice), {"authorization": f"bearer {alice}"}, {"x-api-key": alice},
                    {**bearer(alice), "x-api-key": alice}):  # fmt: skip
        r = client.post("/v1/models/a:predict", json={"instances": [1, 2]}, headers=headers)
        assert r.status_code == 200 and r.json() == {"model": "a", "n": 2}
    assert client.get("/v1/models", headers=bearer(alice)).json() == {"models": ["a", "b"]}
    assert client.get("/v1/models", headers={"x-api-key": ops}).json() == {"models": MODELS}


def test_health_readiness_and_docs_are_open(client):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/health/live/", "/docs",
                 "/openapi.json"):  # fmt: skip
        assert client.get(path).status_code == 200, path
    assert not auth.is_open("/docs/../v1/models") and not auth.is_open("/v2/health/liveness")


def test_a_refused_request_is_answered_before_its_body_is_read(keys):
    sent = []

    async def receive():
        raise AssertionError("the gate read the body")

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        raise AssertionError("the app ran")

    scope = {"type": "http", "method": "POST", "path": "/v1/models/a:predict", "headers": [
        (b"content-type", b"application/json")]}  # fmt: skip
    asyncio.run(KeyGate(app, KeyRing.load(keys[0]))(scope, receive, send))
    assert sent[0]["status"] == 401 and b"API key is required" in sent[1]["body"]


def test_a_key_is_never_stored_echoed_or_logged(keys, caplog, capsys):
    path, alice, ops = keys
    caplog.set_level(logging.DEBUG)
    client = TestClient(tiny_app(KeyRing.load(path)))
    bodies = []
    for key in (alice, ops, alice[:-1], "sr_0123456789ab_" + alice[-40:], alice + "x"):
        for headers in (bearer(key), {"x-api-key": key}, {"Authorization": f"Basic {key}"}):
            for p in ("/v1/models/a:predict", "/v1/models/c:predict", f"/v1/models/{key}:predict"):
                r = client.post(p, json={"instances": [1]}, headers=headers)
                if r.status_code != 200 or key not in p:  # (the test app echoes the name)
                    bodies.append(r.text + str(r.headers))
            bodies.append(client.get("/v1/models", headers=headers).text)
    assert main(["keys", "list", str(path)]) == 0
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    shown = "\n".join(bodies) + logged + path.read_text() + capsys.readouterr().out
    assert "API key refused" in logged and "allowed" in logged  # it did log (not the client)
    for key in (alice, ops):
        assert key not in shown and key.split("_", 2)[2][:20] not in shown


def test_every_check_is_one_constant_time_comparison(keys, monkeypatch):
    _, alice, _ = keys
    ring, calls = KeyRing.load(keys[0]), []
    real = auth.hmac.compare_digest

    def counted(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counted)
    unknown = alice.replace(alice.split("_")[1], "f" * 12)
    wrong = alice[:-1] + ("A" if alice[-1] != "A" else "B")
    for key in (unknown, wrong):
        with pytest.raises(AuthError) as e:
            ring.authorize({"x-api-key": key}, "a")
        assert e.value.status == 401 and e.value.message == "the API key is not valid"
    assert ring.authorize({"x-api-key": alice}, "a") == "alice"
    assert calls == [(64, 64)] * 3  # unknown id and wrong secret: the same work


def test_grpc_metadata(keys):
    _, alice, ops = keys
    ring = KeyRing.load(keys[0])
    assert ring.authorize_grpc([("authorization", f"Bearer {alice}")], "a") == "alice"
    assert ring.authorize_grpc((("x-api-key", ops.encode()), ("user-agent", "grpc")), "c") == "ops"
    assert ring.authorize_grpc([("x-api-key", alice)], None) == "alice"
    with pytest.raises(AuthError) as e:
        ring.authorize_grpc([("user-agent", "grpc-python")], "a")
    assert (e.value.status, e.value.grpc_status) == (401, "UNAUTHENTICATED")
    with pytest.raises(AuthError) as e:
        ring.authorize_grpc([("x-api-key", alice)], "c")
    assert (e.value.status, e.value.grpc_status) == (403, "PERMISSION_DENIED")
    assert ring.models_allowed("alice") == {"a", "b"} and ring.models_allowed("ops") == "*"


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/v1/models", None),
        ("/v2", None),
        ("/v1/models/m1", "m1"),
        ("/v1/models/m1:predict", "m1"),
        ("/v1/models/m1:explain", "m1"),
        ("/v1/models/m1/drift", "m1"),
        ("/v2/models/m1", "m1"),
        ("/v2/models/m1/ready", "m1"),
        ("/v2/models/m1/versions/3/infer", "m1"),
        ("/v2/models/m1:predict/infer", "m1:predict"),  # as the V2 route reads it
    ],
)
def test_the_model_a_route_calls(path, model):
    assert model_in_path(path) == model


def test_the_app_args_take_auth():
    args = AppArgs(models={"m": "/x"}, auth={"keys_file": "/etc/keys.yaml"})
    assert args.auth.keys_file == "/etc/keys.yaml" and AppArgs(models={"m": "/x"}).auth is None
    with pytest.raises(ValueError, match="Extra inputs"):
        AppArgs(models={"m": "/x"}, auth={"keys_file": "k", "keys": []})
