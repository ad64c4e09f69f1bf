"""The HTTP surface around the routes: JSON errors, and the gates every request passes before a
route reads its body.

Every error is ``{"error": "<what was wrong and what is expected>"}`` with a 4xx status for the
client's mistakes: 400 invalid JSON, 401/403 no or wrong API key (`shiftray.serving.auth`), 404
unknown model or path, 405 wrong method, 413 body over the limit, 415 not a content type the
route reads, 422 a body or instance that does not fit the model. 503 means the model cannot
answer now (not ready, its replica died, past the request timeout; or the replica's queue is
full: then Ray Serve's own backpressure answers, with ``Retry-After``, before anything here
runs); 500 is only ever a bug, and its traceback is logged.

The gate is raw ASGI middleware (nothing is read before they pass), configured from the
application's arguments through ``app.state.args`` (`shiftray.serving.args.AppArgs`):

- `BodyGate`: 415 for a POST that is not ``application/json`` (or, for the Open Inference
  Protocol's binary extension, ``application/octet-stream`` with ``Inference-Header-Content-
  Length``), 415 for a compressed body, 413 for a body over ``max_body_bytes`` (declared or
  streamed). Ray Serve has no body limit of its own.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from shiftray.serving.inputs import BadInput

log = logging.getLogger("ray.serve")
BINARY = "application/octet-stream"


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def error(status: int, message: str, headers: dict[str, str] | None = None, **extra) -> Response:
    body = orjson.dumps({"error": message, **extra})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def install_errors(app: FastAPI) -> None:
    """Every error a JSON object; a 500 only for a bug, with its traceback in the replica log."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                 for e in exc.errors()[:5]]  # fmt: skip
        return error(422, "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else orjson.dumps(exc.detail).decode()
        return error(exc.status_code, detail, headers=exc.headers)

    @app.exception_handler(BadInput)
    async def _bad(_: Request, exc: BadInput) -> Response:
        return error(exc.status, str(exc))

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> Response:
        headers = {"retry-after": "1"} if exc.status == 503 else None
        return error(exc.status, exc.message, headers=headers, **exc.extra)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        log.exception("internal error answering %s %s", request.method, request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); see the replica's log")


async def _send(send, status: int, message: str, headers: list | None = None) -> None:
    body = orjson.dumps({"error": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def _is_prediction(scope) -> bool:
    return scope["type"] == "http" and scope.get("method") == "POST"


class BodyGate:
    """415 for a content type or encoding the routes cannot read, 413 for a body over the limit;
    the body is read once here (at most the limit) and replayed to the route."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if not _is_prediction(scope):
            return await self.app(scope, receive, send)
        limit = scope["app"].state.args.max_body_bytes
        headers = dict(scope.get("headers") or [])
        if refused := _refused_content(headers):
            return await _send(send, 415, refused)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _send(send, 413, _too_large(int(declared), limit))
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                return await _send(send, 413, _too_large(size, limit))
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _refused_content(headers: dict[bytes, bytes]) -> str:
    """Why the body's content type or encoding cannot be read ("" when it can)."""
    encoding = headers.get(b"content-encoding", b"identity").decode("latin-1").strip().lower()
    if encoding not in ("", "identity"):
        return f"Content-Encoding {encoding!r}: send the body uncompressed"
    ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
    if ctype == "application/json":
        return ""
    if b"inference-header-content-length" in headers and ctype in ("", BINARY):
        return ""  # the Open Inference Protocol's binary tensor extension
    return (f"Content-Type {ctype or 'none'!r}: send application/json (or {BINARY} with "
            "Inference-Header-Content-Length, the binary tensor extension)")  # fmt: skip


def _too_large(size: int, limit: int) -> str:
    return (f"the body is {size:,} bytes or more, over the limit of {limit:,}; send fewer "
            "instances per request")  # fmt: skip
