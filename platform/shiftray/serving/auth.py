"""Optional API keys for the serving endpoint: ``auth: {keys_file: PATH}`` in the app's args.

A client sends ``Authorization: Bearer <key>`` or ``x-api-key: <key>`` (HTTP), or the same names
as gRPC metadata. 401 without a valid key (none, malformed, unknown, wrong), 403 with a valid key
for a model it may not call. The keys file (`shiftray.serving.keys`) holds salted hashes only.

Why it is built this way:

- The key's id finds its entry, then `hmac.compare_digest` compares hashes in constant time; an
  unknown id is compared against a dummy hash, so it costs what a wrong secret costs and the
  timing tells nobody which ids exist. Unknown and wrong keys get the same message.
- Keys are never logged nor echoed: errors name the model or say what was wrong with the
  header, never its value; the logged path has anything key-shaped redacted.
- `KeyGate` is raw ASGI, outside FastAPI: a request without a key is answered before its body
  is read or any route runs.
- Open without a key: the health and readiness routes (probes carry no credentials) and the API
  docs (/docs, /redoc, /openapi.json and the docs' assets): they describe the routes' shapes,
  which the docs publish anyway, and hold no model names or data. Everything else needs a
  key, so a caller without one learns nothing, not even which paths exist (401 before 404).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shiftray.serving.keys import ALL_MODELS, KEY_PATTERN, KeysFile, key_hash, read_keys

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/-/healthz", "/-/routes",
                        "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})  # fmt: skip
OPEN_PREFIXES = ("/docs/assets/",)
STATE_KEY = "api_key_name"  # scope["state"][STATE_KEY]: the caller's key name (request.state)
_DUMMY_SALT, _DUMMY_HASH = "00" * 16, "00" * 32  # an unknown id is compared against this
_V1_VERBS = (":predict", ":explain")
_MODEL_PATH = re.compile(r"^/v([12])/models/([^/]+)")

Headers = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]


class AuthArgs(BaseModel):
    """The serving app's ``auth:`` argument. The file is read when the application is built."""

    model_config = ConfigDict(extra="forbid")

    keys_file: str = Field(..., description="the API keys file (shiftray keys add): salted hashes")


class AuthError(Exception):
    """401 (no valid key) or 403 (a valid key, a model it may not call); the message holds no key."""

    def __init__(self, status: Literal[401, 403], message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message

    @property
    def grpc_status(self) -> str:
        """The `grpc.StatusCode` name: ``grpc.StatusCode[e.grpc_status]``."""
        return "UNAUTHENTICATED" if self.status == 401 else "PERMISSION_DENIED"


def is_open(path: str) -> bool:
    """Whether a route needs no key (health, readiness, the API docs)."""
    if any(seg in (".", "..") for seg in path.split("/")):
        return False
    return path.rstrip("/") in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def model_in_path(path: str) -> str | None:
    """The model a route calls, read the way the routes read it (``/v1/models/{name}:predict``,
    ``/v1/models/{name}/drift``, ``/v2/models/{name}/infer``, ...); None for ``/v1/models``."""
    m = _MODEL_PATH.match(path)
    if m is None:
        return None
    version, name = m.groups()
    if version == "1" and path == m.group(0):  # the verb is only in the last segment
        for verb in _V1_VERBS:
            if name.endswith(verb) and len(name) > len(verb):
                return name[: -len(verb)]
    return name


def presented_key(headers: Headers) -> str:
    """The key from ``Authorization: Bearer`` or ``x-api-key`` (HTTP headers or gRPC metadata);
    401 when none, when the Authorization scheme is not Bearer, or when two keys differ."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found = []
    for k, v in pairs:
        k = (k.decode("latin-1") if isinstance(k, bytes) else k).lower()
        v = v.decode("latin-1") if isinstance(v, bytes) else v
        if k == "authorization":
            scheme, _, token = v.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError(401, "the Authorization header must be `Bearer <API key>`")
            found.append(token.strip())
        elif k == "x-api-key":
            found.append(v.strip())
    if not found:
        raise AuthError(401, "an API key is required: send `Authorization: Bearer <key>` or "
                             "`x-api-key: <key>`")  # fmt: skip
    if len(set(found)) > 1:
        raise AuthError(401, "the request carries two different API keys; send one")
    return found[0]


class KeyRing:
    """The keys of one keys file, by id; loaded once when the application is built."""

    def __init__(self, keys: KeysFile, source: str = "keys file") -> None:
        self._by_id = {k.id: k for k in keys.keys}
        self._by_name = {k.name: k for k in keys.keys}
        if not keys.keys:
            log.warning("%s holds no API keys: every request that needs one gets 401", source)

    @classmethod
    def load(cls, path: str | Path) -> KeyRing:
        """Read and validate the file (`KeysFileError` naming the file and the bad entry)."""
        return cls(read_keys(path), source=str(path))

    def authorize(self, headers: Headers, model: str | None) -> str:
        """The name of the key the request carries, if it may call ``model`` (None: a route
        that calls no model); `AuthError` 401 or 403 otherwise."""
        key = presented_key(headers)
        m = KEY_PATTERN.fullmatch(key)
        if m is None:
            raise AuthError(401, "the API key is malformed (a shiftray key is sr_<id>_<secret>)")
        entry = self._by_id.get(m["id"])
        salt, want = (entry.salt, entry.sha256) if entry else (_DUMMY_SALT, _DUMMY_HASH)
        matches = hmac.compare_digest(key_hash(salt, key), want)  # always one comparison
        if entry is None or not matches:
            log.info("API key refused: %s", "unknown id" if entry is None else
                     f"wrong secret for key {entry.name!r}")  # fmt: skip
            raise AuthError(401, "the API key is not valid")
        if model is not None and entry.models != ALL_MODELS and model not in entry.models:
            shown = redacted(model[:100])  # the client's text: never echo a key in it
            log.info("API key %r refused for model %r", entry.name, shown)
            raise AuthError(403, f"this API key may not call model {shown!r}")
        log.debug("API key %r allowed (model %r)", entry.name, model and redacted(model[:100]))
        return entry.name

    def authorize_grpc(self, metadata: Iterable[tuple[str, str | bytes]], model: str | None) -> str:
        """`authorize` for gRPC invocation metadata (``authorization: Bearer <key>`` or
        ``x-api-key``): map `AuthError.grpc_status` to the call's status code."""
        return self.authorize([(k, v) for k, v in metadata], model)

    def models_allowed(self, name: str) -> set[str] | Literal["*"]:
        """The models key ``name`` may call ("*": all), e.g. to filter ``GET /v1/models``."""
        models = self._by_name[name].models
        return ALL_MODELS if models == ALL_MODELS else set(models)


def caller(scope: Mapping) -> str | None:
    """The key name `KeyGate` let in (``request.scope``); None on an open route or without auth."""
    return (scope.get("state") or {}).get(STATE_KEY)


def redacted(text: str) -> str:
    return KEY_PATTERN.sub("sr_<redacted>", text)


# -- the HTTP gate (raw ASGI: before FastAPI reads anything) ------------------------------------


class KeyGate:
    """401/403 as ``{"error": ...}`` for a request without a key that may call the route's model,
    before its body is read; lets in open routes, and records the caller's key name (`caller`).
    Outermost middleware: add it after `BodyGate` (Starlette's last added runs first)."""

    def __init__(self, app, ring: KeyRing | None = None) -> None:
        self.app, self.ring = app, ring  # else the application's ``state.keys`` (None: no auth)

    async def __call__(self, scope, receive, send) -> None:
        ring = self.ring or getattr(getattr(scope.get("app"), "state", None), "keys", None)
        if scope["type"] not in ("http", "websocket") or ring is None:
            return await self.app(scope, receive, send)
        path = route_path(scope)
        if is_open(path):
            return await self.app(scope, receive, send)
        try:
            name = ring.authorize(scope.get("headers") or [], model_in_path(path))
        except AuthError as e:
            log.info("%s %s %s: %s", e.status, scope.get("method", "WS"), redacted(path[:200]),
                     e.message)  # fmt: skip
            return await _deny(scope, send, e)
        scope["state"] = {**(scope.get("state") or {}), STATE_KEY: name}
        return await self.app(scope, receive, send)


def route_path(scope: Mapping) -> str:
    """The path the app routes on, without a Serve route_prefix (``root_path``)."""
    path, root = scope.get("path") or "/", (scope.get("root_path") or "").rstrip("/")
    return (path[len(root) :] or "/") if root and path.startswith(root + "/") else path


async def _deny(scope, send, e: AuthError) -> None:
    if scope["type"] == "websocket":
        return await send({"type": "websocket.close", "code": 1008})  # policy violation
    body = json.dumps({"error": e.message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if e.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="shiftray"'))
    await send({"type": "http.response.start", "status": e.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
