"""The servers under test, each its own process tree: started, checked, measured (CPU seconds of
the tree) and stopped by pid. Each serves the same run directory's `Predictor` with the same
torch threads (``--threads`` and OMP_NUM_THREADS)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from serve_peers.runs import Body

HERE = Path(__file__).resolve().parent

# Every server's environment (on top of this process's, less RAY_ADDRESS: each Ray is its own).
BENCH_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
    "KSERVE_LOGLEVEL": "WARNING",  # KServe logs each request at INFO
}

# Extra environment for `shiftray serve` alone (or `--shiftray-env K=V`): it sets its Ray Serve
# configuration itself (shiftray.serving.local.SERVING_ENVIRONMENT: HAProxy ingress, user code on
# the replica's loop), so nothing is needed here; a variable set here wins over its default.
SHIFTRAY_SERVE_ENV: dict[str, str] = {}

READY_PATH = {"bare": "/v2/health/ready", "kserve": "/v2/health/ready", "litserve": "/health",
              "litserve-batch": "/health", "shiftray": "/v2/health/ready"}  # fmt: skip


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log: Path
    proc: subprocess.Popen | None = None
    skipped: str = ""  # why it is not measured
    started_s: float = 0.0  # seconds until ready
    check: dict = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    """A free port outside the kernel's ephemeral range, where other processes' "bind to port 0"
    helpers pick theirs (a server there with SO_REUSEPORT, as Ray Serve's and HAProxy's are,
    would share the port and answer some of the requests)."""
    import random
    import socket

    while True:
        port = random.randint(20000, 29999)
        try:
            for host in ("127.0.0.1", "0.0.0.0"):
                with socket.socket() as s:
                    s.bind((host, port))
            return port
        except OSError:
            continue


def foreign_listeners(s: Server) -> list[int]:
    """pids listening on the server's port that are not its processes (none, or it is shared)."""
    ours = {p.pid for p in tree(s)}
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return []
    return sorted(
        {
            c.pid
            for c in conns
            if c.status == psutil.CONN_LISTEN
            and c.laddr
            and c.laddr.port == s.port
            and c.pid is not None
            and c.pid not in ours
        }
    )


def define(names, model: str, run_dir: Path, threads: int, peers_python: str, logs: Path,
           lit_batch: int, lit_timeout_s: float, shiftray_env: dict[str, str],
           shiftray_args: list[str]) -> dict[str, Server]:  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= BENCH_ENV | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    peer = ["--run-dir", str(run_dir), "--name", model, "--threads", str(threads)]
    shiftray = Path(sys.executable).with_name("shiftray")
    if "--threads" in _help(shiftray):  # today: only OMP_NUM_THREADS says it
        shiftray_args = ["--threads", str(threads), *shiftray_args]
    out = {}
    for name in names:
        port = free_port()
        argv = {
            "bare": [sys.executable, str(HERE / "bare.py"), *peer],
            "litserve": [peers_python, str(HERE / "litserve_peer.py"), *peer],
            "litserve-batch": [peers_python, str(HERE / "litserve_peer.py"), *peer,
                               "--max-batch-size", str(lit_batch),
                               "--batch-timeout", str(lit_timeout_s)],
            "kserve": [peers_python, str(HERE / "kserve_peer.py"), *peer],
            "shiftray": [str(shiftray), "serve", f"{model}={run_dir}", *shiftray_args],
        }[name]  # fmt: skip
        argv += ["--port", str(port)]
        extra = SHIFTRAY_SERVE_ENV | shiftray_env if name == "shiftray" else {}
        out[name] = Server(name, argv, env | extra, port, logs / f"{model}-{name}.log")
    return out


def _help(shiftray: Path) -> str:
    try:
        out = subprocess.run([str(shiftray), "serve", "--help"], capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout


def launch(s: Server) -> None:
    if not Path(s.argv[0]).exists():
        s.skipped = f"{s.argv[0]} does not exist (see the setup in bench/serve_load.py)"
        return
    with open(s.log, "wb") as log:  # the child keeps its own descriptor
        s.proc = subprocess.Popen(s.argv, env=s.env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    s.started_s = time.monotonic()


def _get(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, urllib.error.URLError):
        return 0


def wait_ready(s: Server, timeout_s: float) -> None:
    """Until GET the server's ready route answers 200, it exits, or ``timeout_s`` passes."""
    if s.proc is None:
        return
    url = s.base + READY_PATH[s.name]
    t0 = s.started_s
    while time.monotonic() - t0 < timeout_s:
        if s.proc.poll() is not None:
            s.skipped = f"exited with {s.proc.returncode} before ready: {tail(s.log)}"
            return
        if _get(url) == 200:
            s.started_s = round(time.monotonic() - t0, 1)
            return
        time.sleep(0.5)
    s.skipped = f"not ready in {timeout_s:.0f} s: {tail(s.log)}"


def post(url: str, body: Body, timeout: float = 60.0) -> tuple[int, dict | str]:
    req = urllib.request.Request(url, data=body.data, headers=body.headers(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")[:300]
    except (OSError, ValueError) as e:
        return 0, f"{type(e).__name__}: {e}"


def answer(doc: dict | str) -> dict:
    """label and index of a V2 answer (what every server must agree on), or the error."""
    if not isinstance(doc, dict):
        return {"error": doc}
    got = {o.get("name"): o.get("data") for o in doc.get("outputs", [])}
    return {
        "model_name": doc.get("model_name"),
        "label": (got.get("label") or [None])[0],
        "index": (got.get("index") or [None])[0],
        "outputs": sorted(k for k in got if k),
    }


def drain(s: Server, url: str, body: Body, limit_s: float = 180.0) -> float:
    """Until one request answers 200: the requests a closed-loop client left behind when it
    stopped are served first (a server keeps computing them), so the next server measured
    does not share the CPU with them. Returns the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if post(url, body, timeout=limit_s)[0] == 200:
            break
        time.sleep(0.2)
    return time.monotonic() - t0


def tree(s: Server) -> list[psutil.Process]:
    if s.proc is None or s.proc.poll() is not None:
        return []
    try:
        root = psutil.Process(s.proc.pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(s: Server) -> float:
    """User + system CPU seconds of the server's live processes."""
    total = 0.0
    for p in tree(s):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def pause(s: Server, paused: bool) -> None:
    """SIGSTOP (or SIGCONT) every process of the server: a paused server takes no CPU from the
    one under load (Ray's and LitServe's batching loop's idle work included)."""
    for p in tree(s):
        try:
            p.suspend() if paused else p.resume()
        except psutil.Error:
            pass


def stop(s: Server, grace_s: float = 60.0) -> None:
    """`shiftray serve`: SIGINT (it shuts its Ray down); a peer: SIGTERM to each of its processes
    (LitServe's workers outlive a signal to its main process alone). Then SIGKILL to what is
    left, by pid (psutil checks each against its start time)."""
    if s.proc is None:
        return
    pause(s, False)
    procs = tree(s)
    if s.proc.poll() is None:
        for p in procs if s.name != "shiftray" else procs[:1]:
            try:
                p.send_signal(signal.SIGINT if s.name == "shiftray" else signal.SIGTERM)
            except psutil.Error:
                pass
        try:
            s.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait()
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


def tail(path: Path, chars: int = 400) -> str:
    try:
        return " | ".join(path.read_text(errors="replace")[-chars:].splitlines())
    except OSError:
        return ""
