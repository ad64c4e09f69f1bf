"""The API keys file: what `shiftray keys add` writes and the serving app's ``auth.keys_file``
reads. Salted hashes only; a key itself is shown once, when it is made, and never stored.

The file (YAML, mode 0600)::

    version: 1
    keys:
      - name: alice                 # who holds the key: in logs and `shiftray keys list`
        id: 3f9a2c1b7d4e            # 12 hex digits, also inside the key: sr_<id>_<secret>
        salt: 9b1c...               # 16 random bytes, hex
        sha256: 5e88...             # HMAC-SHA-256(salt, key), hex
        models: [mnist-usps-dann]   # the models the key may call, or "*" for all
        created: "2025-01-31T12:00:00Z"

A key is ``sr_<id>_<secret>`` with a 256-bit random secret (``secrets.token_urlsafe(32)``): the
prefix makes a leaked key easy to recognise (secret scanners, logs), the id finds its entry
without trying every hash. Because the secret is random and long, nobody can guess it from its
hash, so one salted HMAC-SHA-256 (about a microsecond) is the right cost. A slow password KDF
(scrypt, bcrypt, argon2) protects low-entropy passwords; here it would only add milliseconds to
every request of a latency-critical endpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shiftray.errors import UserInputError

KEY_PREFIX = "sr"
KEY_PATTERN = re.compile(r"sr_(?P<id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{32,128})")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
ALL_MODELS = "*"


class KeysFileError(UserInputError):
    """The keys file is missing or wrong; the message names the file and the entry."""


class ApiKey(BaseModel):
    """One key's entry: what identifies it, its salted hash, and the models it may call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., pattern=NAME_PATTERN)
    id: str = Field(..., pattern=r"^[0-9a-f]{12}$")
    salt: str = Field(..., pattern=r"^[0-9a-f]{32}$")
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$")
    models: list[str] | Literal["*"]
    created: str | None = None

    @field_validator("models")
    @classmethod
    def _some_models(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, list) and (not v or any(not m.strip() or m == ALL_MODELS for m in v)):
            raise ValueError('give a non-empty list of model names, or "*" for all models')
        return v


class KeysFile(BaseModel):
    """The whole file: names and ids are unique."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    keys: list[ApiKey] = Field(default_factory=list)

    @field_validator("keys")
    @classmethod
    def _unique(cls, v: list[ApiKey]) -> list[ApiKey]:
        for field in ("name", "id"):
            values = [getattr(k, field) for k in v]
            if dups := sorted({x for x in values if values.count(x) > 1}):
                raise ValueError(f"{field} {dups[0]!r} appears more than once")
        return v


def key_hash(salt: str, key: str) -> str:
    """HMAC-SHA-256 of the whole key under the entry's salt, hex."""
    return hmac.new(bytes.fromhex(salt), key.encode(), hashlib.sha256).hexdigest()


def new_key(name: str, models: list[str] | Literal["*"]) -> tuple[str, ApiKey]:
    """A fresh key and its entry; the key is returned to show once, the entry holds no secret."""
    key_id, salt = secrets.token_hex(6), secrets.token_hex(16)
    key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    entry = ApiKey(name=name, id=key_id, salt=salt, sha256=key_hash(salt, key), models=models,
                   created=created)  # fmt: skip
    return key, entry


def _where(err: dict, raw: object) -> str:
    """``keys[2] (name 'bob'): salt`` for a pydantic error location."""
    loc = [p for p in err.get("loc", ()) if not (isinstance(p, str) and "[" in p)]  # union arms
    if len(loc) >= 2 and loc[0] == "keys" and isinstance(loc[1], int):
        entries = raw.get("keys") if isinstance(raw, dict) else None
        entry = entries[loc[1]] if isinstance(entries, list) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        head = f"keys[{loc[1]}]" + (f" (name {name!r})" if name else "")
        return head + "".join(f".{p}" for p in loc[2:])
    return ".".join(str(p) for p in loc) or "the file"


def read_keys(path: str | Path, missing_ok: bool = False) -> KeysFile:
    """The validated file; a clear error naming the file and the bad entry otherwise."""
    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return KeysFile()
        raise KeysFileError(f"keys file {path} does not exist (make one: shiftray keys add {path} "
                            "--name NAME --models MODEL)")  # fmt: skip
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise KeysFileError(f"keys file {path}: not valid YAML ({e})") from None
    try:
        return KeysFile.model_validate(raw if raw is not None else {})
    except ValidationError as e:
        first = e.errors()[0]
        msg = first["msg"].removeprefix("Value error, ")
        raise KeysFileError(f"keys file {path}: {_where(first, raw)}: {msg}") from None


def write_keys(path: str | Path, keys: KeysFile) -> None:
    """Atomically (a temporary file in the same folder, then a rename), readable by the owner
    only: a reader never sees half a file, and a crash leaves the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# shiftray API keys (shiftray keys add|list|revoke): salted hashes, no keys\n"
    text += yaml.safe_dump(keys.model_dump(exclude_none=True), sort_keys=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
