"""The HTTP surface: request/response schemas, JSON errors, and the body and content-type gate.

Every error is ``{"error": "<what was wrong and what is expected>"}`` with a 4xx status for the
client's mistakes: 400 invalid JSON, 404 unknown model or path, 405 wrong method, 413 body over
the limit, 415 not JSON, 422 a body or instance that does not fit the model. 503 means the
model cannot answer now (not ready, its replica died, timed out); 500 is only ever a bug.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from shiftray.serving.inputs import BadInput


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


# -- schemas (OpenAPI at /docs and /openapi.json) -----------------------------------------------


class V1Request(BaseModel):
    """KServe V1 ``:predict`` body."""

    model_config = ConfigDict(extra="forbid")
    instances: list[Any] = Field(
        ...,
        description='one per input: a list of numbers (feature vector), an array (image), '
        '{"b64": "<base64 PNG/JPEG>"} (image), or a string (text model)',
    )


class V1Prediction(BaseModel):
    label: str
    index: int
    probabilities: list[float] = Field(..., description="class probabilities, in `labels` order")
    shift_score: float | None = Field(
        None, description="0..1: share of target training inputs more target-like than this one"
    )
    target_probability: float | None = Field(
        None, description="P(target) by the DANN/CDAN domain discriminator, when the model has one"
    )


class V1Response(BaseModel):
    model: str
    predictions: list[V1Prediction]


class V2Tensor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[int]
    datatype: str
    data: Any
    parameters: dict[str, Any] | None = None


class V2RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class V2Request(BaseModel):
    """Open Inference Protocol ``/infer`` body: one input tensor named ``input``."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    inputs: list[V2Tensor]
    outputs: list[V2RequestedOutput] | None = None
    parameters: dict[str, Any] | None = None


class V2Response(BaseModel):
    model_name: str
    id: str | None = None
    outputs: list[V2Tensor]


# -- errors -------------------------------------------------------------------------------------


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errs = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errs):
        ctx = next(e for e in errs if e.get("type") == "json_invalid").get("ctx", {})
        return 400, f"the body is not valid JSON ({ctx.get('error', 'parse error')})"
    parts = []
    for e in errs[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {e.get('msg')}")
    more = f" (and {len(errs) - 5} more)" if len(errs) > 5 else ""
    return 422, "; ".join(parts) + more


def install_errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc)
        return error(status, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return error(exc.status_code, detail)

    @app.exception_handler(BadInput)
    async def _bad(_: Request, exc: BadInput) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.message, **exc.extra)


# -- the body and content-type gate (raw ASGI: before FastAPI reads anything) -------------------


class BodyGate:
    """413 for a body over ``limit`` bytes (declared or streamed), 415 for a POST that is not
    ``application/json``. Ray Serve has no body limit of its own."""

    limit = 8 * 1024 * 1024  # set by the ingress from AppArgs.max_body_bytes

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if ctype != "application/json":
            shown = ctype or "none"
            return await _send(send, 415, f"Content-Type {shown!r}: send application/json")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _send(send, 413, self._too_large(int(declared)))
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await _send(send, 413, self._too_large(size))
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _too_large(self, size: int) -> str:
        return f"the body is {size:,} bytes or more, over the limit of {self.limit:,}; send fewer instances per request"


async def _send(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
