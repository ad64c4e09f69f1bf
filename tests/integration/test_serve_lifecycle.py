"""`shiftray serve` as an operator runs it: SIGTERM under load stops accepting, lets the requests
in flight finish, exits 0 within its grace period, and leaves no process behind (Ray's agents
and HAProxy included)."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "bench"))
    from serve_load import write_run

    return write_run(tmp_path_factory.mktemp("runs") / "lenet", "lenet", (1, 28, 28), False)


def _start(run_dir: Path, port: int, grace: float) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).parent / "shiftray"), "serve", f"m={run_dir}", "--port",
           str(port), "--threads", "1", "--grace-period", str(grace)]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip


def _wait_ready(proc: subprocess.Popen, base: str, lines: list[str]) -> None:
    def read():
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, "".join(lines)
        try:
            if requests.get(f"{base}/v2/health/ready", timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening, or no replica yet
            pass
        time.sleep(0.5)
    raise AssertionError("not ready:\n" + "".join(lines))


def test_sigterm_under_load_drains_exits_0_and_leaves_no_process(run_dir):
    from shiftray.serving.local import free_port

    port, grace = free_port(), 30.0
    base, lines = f"http://127.0.0.1:{port}", []
    proc = _start(run_dir, port, grace)
    _wait_ready(proc, base, lines)
    family = psutil.Process(proc.pid).children(recursive=True)
    assert any("raylet" in " ".join(p.cmdline()) for p in family)  # Ray runs under it
    x = np.random.default_rng(0).random((1, 1, 28, 28)).tolist()
    log: list[tuple[float, int | str]] = []
    stop = threading.Event()

    def client():
        s = requests.Session()
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = s.post(f"{base}/v1/models/m:predict", json={"instances": x}, timeout=60)
                log.append((t0, r.status_code))
            except requests.ConnectionError:
                log.append((t0, "refused"))
                time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    while sum(s == 200 for _, s in log) < 50:
        time.sleep(0.05)
    signalled = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    code = proc.wait(grace + 15)
    exited = time.monotonic() - signalled
    stop.set()
    for t in threads:
        t.join(70)
    assert code == 0, "".join(lines)
    assert exited <= grace, exited
    before = [s for t0, s in log if t0 < signalled]
    assert before and all(s == 200 for s in before), before  # in flight at the signal: answered
    assert all(s in (200, 503, "refused") for _, s in log)  # after it: refused, never a 500
    left = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [(p.pid, p.name()) for p in left]
    assert "stopping" in "".join(lines)
