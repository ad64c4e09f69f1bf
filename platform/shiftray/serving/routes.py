"""The deployment `ModelServer`: HTTP routes (FastAPI) and gRPC methods over one replica's
`shiftray.serving.server.Models`. Each route is: look the model up, decode with its protocol
module, predict, encode.

- KServe V1: ``GET /v1/models``, ``GET /v1/models/{name}``, ``POST /v1/models/{name}:predict``,
  ``GET /v1/models/{name}/drift``;
- Open Inference Protocol (HTTP): ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``,
  ``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer``;
- Open Inference Protocol (gRPC, ``inference.GRPCInferenceService``): ServerLive, ServerReady,
  ServerMetadata, ModelReady, ModelMetadata, ModelInfer;
- ``/docs`` (Swagger UI, served offline) and ``/openapi.json``.
"""

import asyncio  # no `from __future__ import annotations`: FastAPI reads the route annotations
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve
from tritonclient.grpc import service_pb2 as pb

from shiftray.serving.args import AppArgs
from shiftray.serving.auth import AuthError, KeyGate, KeyRing, caller
from shiftray.serving.docs import install_docs
from shiftray.serving.http import ApiError, BodyGate, install_errors
from shiftray.serving.inputs import BadInput
from shiftray.serving.predictor import Prediction
from shiftray.serving.protocols import kserve_v1, oip_grpc, oip_v2
from shiftray.serving.server import Models

OFF_LOOP_BYTES = 64 * 1024  # bodies larger than this are decoded in a worker thread

api = FastAPI(
    title="shiftray serving",
    description="Predictions, with a per-input domain-shift score, from adapted models "
    "(KServe V1 and the Open Inference Protocol, HTTP and gRPC).",
    version="2", docs_url=None, redoc_url=None,
)  # fmt: skip
api.add_middleware(BodyGate)
api.add_middleware(KeyGate)  # the last added runs first: 401/403 before anything else
install_errors(api)
install_docs(api)

ERRORS = {s: {"description": d, "content": {"application/json": {"schema": {
    "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}
    for s, d in ((400, "invalid JSON"), (404, "no such model"), (413, "body too large"),
                 (415, "unreadable content type"), (422, "does not fit the model"),
                 (503, "cannot answer now"))}  # fmt: skip


def _body(schema: dict[str, Any], binary: bool = False) -> dict[str, Any]:
    content = {"application/json": {"schema": schema}}
    if binary:
        content[oip_v2.BINARY] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}


async def _decode(body: bytes, fn, *args):
    """Small bodies on the event loop; large ones (images, big batches) in a thread."""
    if len(body) > OFF_LOOP_BYTES:
        return await asyncio.to_thread(fn, body, *args)
    return fn(body, *args)


async def _grpc(context, empty, call, request, ring: KeyRing | None, model: str | None):
    """``call(request)`` for a caller whose key may call ``model`` (when keys are on), with a
    client's mistake answered as its gRPC status code."""
    try:
        if ring is not None:
            ring.authorize_grpc(context.invocation_metadata(), model)
        return await call(request)
    except (ApiError, BadInput, AuthError) as e:
        message = str(e) if isinstance(e, BadInput) else e.message
        context.set_code(oip_grpc.status(e.status))
        context.set_details(message)
        return empty()


# The class is pickled by value when Serve deploys it: every module-level name its methods use
# must be defined above it.
@serve.deployment(
    name="ModelServer",
    # a log line per request costs ~10% at c=1; below WARNING Serve still builds each one
    logging_config={"enable_access_log": False, "log_level": "WARNING"},
    health_check_period_s=10,
    health_check_timeout_s=30,
)
@serve.ingress(api)
class ModelServer:
    def __init__(self, args: AppArgs, paths: dict[str, str]) -> None:
        self.ring = KeyRing.load(args.auth.keys_file) if args.auth else None
        api.state.args, api.state.keys = args, self.ring  # the gates' settings (one app a process)
        self.args = args
        self.models = Models(args, paths)

    # -- calls through a deployment handle (tests, other deployments) -------------------------
    async def predict(self, name: str, x: np.ndarray) -> Prediction:
        return await self.models.predict(name, x)

    async def drift(self, name: str) -> dict[str, Any]:
        return await self.models.drift(name)

    def shared_bases(self) -> dict[str, Any]:
        return self.models.shared_bases()

    def check_health(self) -> None:
        self.models.check_health()

    # -- KServe V1 ---------------------------------------------------------------------------
    @api.get("/v1/models")
    def v1_models(self, request: Request) -> dict[str, list[str]]:
        """The models, or with API keys on, the models the caller's key may call."""
        names = sorted(self.models.cards)
        if self.ring is not None and (key := caller(request.scope)) is not None:
            allowed = self.ring.models_allowed(key)
            names = [n for n in names if allowed == "*" or n in allowed]
        return {"models": names}

    @api.get("/v1/models/{name}", responses=ERRORS)
    def v1_model(self, name: str) -> dict[str, Any]:
        return self.models.card(name, ready=False).public()

    @api.post("/v1/models/{name}:predict", responses=ERRORS,
              openapi_extra=_body(kserve_v1.REQUEST_SCHEMA))  # fmt: skip
    async def v1_predict(self, name: str, request: Request) -> Response:
        card = self.models.card(name)
        x = await _decode(await request.body(), kserve_v1.decode, card.input,
                          self.args.max_instances)  # fmt: skip
        pred = await self.models.predict(name, x)
        return Response(kserve_v1.encode(pred), media_type="application/json")

    @api.get("/v1/models/{name}/drift", responses=ERRORS)
    async def v1_drift(self, name: str) -> dict[str, Any]:
        self.models.card(name)
        return await self.models.drift(name)

    # -- Open Inference Protocol (HTTP) ------------------------------------------------------
    @api.get("/v2")
    def v2_server(self) -> dict[str, Any]:
        return {"name": "shiftray", "version": "2", "extensions": ["binary_tensor_data"]}

    @api.get("/v2/health/live")
    def v2_live(self) -> dict[str, bool]:
        return {"live": True}

    @api.get("/v2/health/ready", responses=ERRORS)
    def v2_ready(self) -> dict[str, Any]:
        """Ready when at least one model is (the others are listed with their reasons)."""
        down = {n: c.reason for n, c in self.models.cards.items() if not c.ready}
        if len(down) == len(self.models.cards):
            raise ApiError(503, "no model is ready", not_ready=down)
        return {"ready": True, "not_ready": down}

    @api.get("/v2/models/{name}", responses=ERRORS)
    def v2_model(self, name: str) -> dict[str, Any]:
        card = self.models.card(name)
        return {"name": name, "versions": [], "platform": "shiftray-pytorch",
                **oip_v2.tensor_metadata(card.input, len(card.classes)),
                "parameters": {"labels": card.classes, "training": card.training}}  # fmt: skip

    @api.get("/v2/models/{name}/ready", responses=ERRORS)
    def v2_model_ready(self, name: str) -> dict[str, Any]:
        self.models.card(name)
        return {"name": name, "ready": True}

    @api.post("/v2/models/{name}/infer", responses=ERRORS,
              openapi_extra=_body(oip_v2.REQUEST_SCHEMA, binary=True))  # fmt: skip
    async def v2_infer(self, name: str, request: Request) -> Response:
        card = self.models.card(name)
        header = request.headers.get(oip_v2.HEADER_LENGTH)
        infer = await _decode(await request.body(), oip_v2.decode, header, card.input,
                              self.args.max_instances)  # fmt: skip
        pred = await self.models.predict(name, infer.x)
        body, headers = oip_v2.encode(infer, pred)
        return Response(body, headers=headers)

    # -- Open Inference Protocol (gRPC) ------------------------------------------------------
    async def ServerLive(self, request):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request):
        return pb.ServerReadyResponse(ready=any(c.ready for c in self.models.cards.values()))

    async def ServerMetadata(self, request):
        return pb.ServerMetadataResponse(name="shiftray", version="2")

    async def ModelReady(self, request, grpc_context=None):
        return await _grpc(grpc_context, pb.ModelReadyResponse, self._model_ready, request,
                           self.ring, request.name)  # fmt: skip

    async def ModelMetadata(self, request, grpc_context=None):
        return await _grpc(grpc_context, pb.ModelMetadataResponse, self._model_metadata, request,
                           self.ring, request.name)  # fmt: skip

    async def ModelInfer(self, request, grpc_context=None):
        return await _grpc(grpc_context, pb.ModelInferResponse, self._model_infer, request,
                           self.ring, request.model_name)  # fmt: skip

    async def _model_ready(self, request):
        card = self.models.card(request.name, ready=False)
        return pb.ModelReadyResponse(ready=card.ready)

    async def _model_metadata(self, request):
        card = self.models.card(request.name)
        return oip_grpc.metadata(request.name, card.input, len(card.classes))

    async def _model_infer(self, request):
        card = self.models.card(request.model_name)
        infer = oip_grpc.decode(request, card.input, self.args.max_instances)
        pred = await self.models.predict(request.model_name, infer.x)
        return oip_grpc.encode(infer, pred)
