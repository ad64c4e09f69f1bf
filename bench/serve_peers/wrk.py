"""The closed-loop client: wrk (C, one thread, ``connections`` keep-alive connections each with
one request in flight) posting one fixed body; its Lua script reports statuses and latency
percentiles. wrk leaves the CPU to the servers; its latency histogram counts every response
(non-2xx included), so a row with non-2xx answers says so."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from serve_peers.runs import Body

LUA = Path(__file__).with_name("post.lua")
_FILES: dict[str, str] = {}  # sha1 of a body -> its file


def version() -> str:
    path = shutil.which("wrk")
    if path is None:
        return ""
    out = subprocess.run([path, "-v"], capture_output=True, text=True)
    return (out.stdout + out.stderr).splitlines()[0] if (out.stdout + out.stderr) else path


def _body_file(body: Body) -> str:
    key = hashlib.sha1(body.data).hexdigest()
    if key not in _FILES:
        fd, path = tempfile.mkstemp(prefix=f"serve-load-{body.kind}-")
        with os.fdopen(fd, "wb") as f:
            f.write(body.data)
        _FILES[key] = path
    return _FILES[key]


def run(url: str, body: Body, connections: int, seconds: int, timeout_s: int = 30) -> dict:
    """``seconds`` of closed-loop load: 2xx/s, non-2xx, errors and latency percentiles in ms."""
    env = {
        **os.environ,
        "WRK_BODY": _body_file(body),
        "WRK_CONTENT_TYPE": body.content_type,
        "WRK_HEADER_LENGTH": "" if body.header_length is None else str(body.header_length),
    }
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", f"{timeout_s}s",
           "-s", str(LUA), url]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        return {"error": f"wrk rc {out.returncode}: {(out.stderr or out.stdout)[-300:]}"}
    r = json.loads(line.removeprefix("WRKJSON "))
    ok = sum(n for s, n in r["statuses"].items() if 200 <= int(s) < 300)
    sec = r["duration_us"] / 1e6
    lat = r["latency_us"]
    return {
        "ok": ok, "non_2xx": r["requests"] - ok, "statuses": r["statuses"],
        "errors": sum(v for k, v in r["errors"].items() if k != "status"),
        "req_per_s": ok / sec if sec else 0.0,
        "p50_ms": lat["p50"] / 1000, "p90_ms": lat["p90"] / 1000, "p99_ms": lat["p99"] / 1000,
        "max_ms": lat["max"] / 1000, "seconds": sec,
    }  # fmt: skip


def cleanup() -> None:
    for path in _FILES.values():
        Path(path).unlink(missing_ok=True)
    _FILES.clear()
