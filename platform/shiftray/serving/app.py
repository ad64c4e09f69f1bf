"""`build_app`: the Ray Serve application (FastAPI ingress -> multiplexed, batched models).

Routes, in the two conventions model servers share:

- KServe V1: ``GET /v1/models``, ``GET /v1/models/{name}``, ``POST /v1/models/{name}:predict``
  (``{"instances": [...]}`` -> ``{"predictions": [...]}``), and ``GET /v1/models/{name}/drift``;
- Open Inference Protocol (V2): ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``,
  ``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer``.

The ingress decodes and checks inputs (`shiftray.serving.inputs`), then calls the model
deployment with the model's name as the multiplexed model id, so requests go to a replica that
has the model loaded.
"""

import asyncio
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from shiftray.serving.args import AppArgs
from shiftray.serving.catalog import ModelCard, inspect_model
from shiftray.serving.http import (
    ApiError,
    BodyGate,
    V1Request,
    V1Response,
    V2Request,
    V2Response,
    install_errors,
)
from shiftray.serving.inputs import BadInput, InputSpec, v1_instances, v2_tensor
from shiftray.serving.server import ModelUnavailable, model_server

api = FastAPI(
    title="shiftray serving",
    description="Predictions, with a per-input domain-shift score, from adapted models "
    "(KServe V1 and Open Inference Protocol V2).",
    version="1",
)
api.add_middleware(BodyGate)
install_errors(api)

REPLICA_FAILED = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)
V2_OUTPUTS = ("label", "index", "probabilities", "shift_score", "target_probability")


async def _awaited(call):
    return await call


def _floats(a) -> list[float]:
    return [float(v) for v in a]


def _v1_rows(card: ModelCard, out: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for i, idx in enumerate(out["index"].tolist()):
        rows.append({
            "label": card.classes[idx], "index": idx,
            "probabilities": out["probabilities"][i].tolist(),
            "shift_score": None if out["shift_score"] is None else float(out["shift_score"][i]),
            "target_probability": None if out["target_probability"] is None
            else float(out["target_probability"][i]),
        })  # fmt: skip
    return rows


def _v2_outputs(card: ModelCard, out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    n, probs = len(out["index"]), out["probabilities"]
    t = {
        "label": {"name": "label", "datatype": "BYTES", "shape": [n],
                  "data": [card.classes[i] for i in out["index"].tolist()]},
        "index": {"name": "index", "datatype": "INT64", "shape": [n],
                  "data": out["index"].tolist()},
        "probabilities": {"name": "probabilities", "datatype": "FP32",
                          "shape": list(probs.shape), "data": probs.ravel().tolist()},
    }  # fmt: skip
    for key in ("shift_score", "target_probability"):
        if out[key] is not None:
            t[key] = {"name": key, "datatype": "FP32", "shape": [n], "data": _floats(out[key])}
    return t


def _v2_inputs(spec: InputSpec) -> list[dict[str, Any]]:
    """What ``input`` may be: BYTES carries encoded images or texts, FP32 arrays."""
    encoded = [{"name": "input", "datatype": "BYTES", "shape": [-1]}]
    if spec.kind == "text":
        return encoded
    array = [{"name": "input", "datatype": "FP32", "shape": [-1, *spec.shape]}]
    return array + (encoded if spec.kind == "image" else [])


@serve.deployment(name="Ingress", max_ongoing_requests=256)
@serve.ingress(api)
class Ingress:
    def __init__(self, args: AppArgs, server: DeploymentHandle, paths: dict[str, str]) -> None:
        self.args, self.server = args, server
        BodyGate.limit = args.max_body_bytes
        self.cards: dict[str, ModelCard] = {n: inspect_model(n, p) for n, p in paths.items()}

    # -- lookups ----------------------------------------------------------------------------
    def _card(self, name: str, ready: bool = True) -> ModelCard:
        card = self.cards.get(name)
        if card is None:  # a request names a model; it is never joined to a path
            raise ApiError(404, f"no model named {name!r}; models: {sorted(self.cards)}")
        if ready and not card.ready:
            raise ApiError(503, f"model {name!r} is not ready: {card.reason}")
        return card

    async def _call(self, method: str, name: str, *args: Any) -> Any:
        """Call the model deployment for ``name`` (routed to a replica that has it loaded);
        503 when it cannot answer: not loadable, its replica died, or past the timeout."""
        handle = self.server.options(multiplexed_model_id=name)
        call = getattr(handle, method).remote(name, *args)
        timeout = self.args.request_timeout_s
        try:
            return await asyncio.wait_for(_awaited(call), timeout)
        except asyncio.TimeoutError:
            call.cancel()
            raise ApiError(503, f"model {name!r} did not answer in {timeout} s") from None
        except ModelUnavailable as e:
            raise ApiError(503, str(e).splitlines()[-1]) from None
        except REPLICA_FAILED:
            raise ApiError(503, f"the replica serving {name!r} failed; retry the request") from None

    # -- KServe V1 --------------------------------------------------------------------------
    @api.get("/v1/models")
    def v1_models(self) -> dict[str, list[str]]:
        return {"models": sorted(self.cards)}

    @api.get("/v1/models/{name}")
    def v1_model(self, name: str) -> dict[str, Any]:
        return self._card(name, ready=False).public()

    @api.post("/v1/models/{name}:predict", response_model=V1Response)
    async def v1_predict(self, name: str, body: V1Request) -> dict[str, Any]:
        card = self._card(name)
        x = v1_instances(body.instances, card.input, self.args.max_instances)
        out = await self._call("predict", name, x)
        return {"model": out["model"], "predictions": _v1_rows(card, out)}

    @api.get("/v1/models/{name}/drift")
    async def v1_drift(self, name: str) -> dict[str, Any]:
        self._card(name)
        return await self._call("drift", name)

    # -- Open Inference Protocol (V2) -------------------------------------------------------
    @api.get("/v2")
    def v2_server(self) -> dict[str, Any]:
        return {"name": "shiftray", "version": "1", "extensions": []}

    @api.get("/v2/health/live")
    def v2_live(self) -> dict[str, bool]:
        return {"live": True}

    @api.get("/v2/health/ready")
    def v2_ready(self) -> Any:
        """Ready when at least one model is (the others are listed with their reasons)."""
        down = {n: c.reason for n, c in self.cards.items() if not c.ready}
        if len(down) == len(self.cards):
            raise ApiError(503, "no model is ready", not_ready=down)
        return {"ready": True, "not_ready": down}

    @api.get("/v2/models/{name}")
    def v2_model(self, name: str) -> dict[str, Any]:
        card = self._card(name)
        k = len(card.classes)
        return {
            "name": name, "versions": [], "platform": "shiftray-pytorch",
            "inputs": _v2_inputs(card.input),
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "index", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, k]},
                {"name": "shift_score", "datatype": "FP32", "shape": [-1]},
                {"name": "target_probability", "datatype": "FP32", "shape": [-1]},
            ],
            "parameters": {"labels": card.classes, "training": card.training},
        }  # fmt: skip

    @api.get("/v2/models/{name}/ready")
    def v2_model_ready(self, name: str) -> dict[str, Any]:
        self._card(name)
        return {"name": name, "ready": True}

    @api.post("/v2/models/{name}/infer", response_model=V2Response)
    async def v2_infer(self, name: str, body: V2Request) -> dict[str, Any]:
        card = self._card(name)
        if len(body.inputs) != 1 or body.inputs[0].name != "input":
            got = [t.name for t in body.inputs]
            raise BadInput(f"inputs: send exactly one tensor named 'input', got {got}")
        t = body.inputs[0]
        x = v2_tensor(t.shape, t.datatype, t.data, card.input, self.args.max_instances)
        wanted = [o.name for o in body.outputs] if body.outputs else list(V2_OUTPUTS)
        if unknown := sorted(set(wanted) - set(V2_OUTPUTS)):
            raise BadInput(f"outputs {unknown}: available are {list(V2_OUTPUTS)}")
        out = await self._call("predict", name, x)
        tensors = _v2_outputs(card, out)
        return {"model_name": out["model"], "id": body.id,
                "outputs": [tensors[n] for n in wanted if n in tensors]}  # fmt: skip


def build_app(args: dict[str, Any] | AppArgs) -> serve.Application:
    """The application for a Ray Serve config file (``import_path: shiftray.serving:build_app``)
    or `shiftray serve`: ``args`` as `AppArgs` (or its dict)."""
    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    paths = args.named_paths()
    server = model_server(args)
    if args.replicas is not None:
        server = server.options(num_replicas=args.replicas)
    if args.device == "cuda":  # Ray hides every GPU from an actor that asks for none
        server = server.options(ray_actor_options={"num_gpus": 1})
    server = server.bind(args, paths)
    return Ingress.bind(args, server, paths)
