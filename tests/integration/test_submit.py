"""`shiftray submit | status | logs | stop` against a real Ray head: ``ray start --head --block``
on loopback, started here in its own process group and ended by that group's id (never
``ray stop``, which would end every Ray on the machine)."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.ray


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def up(url: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except OSError:
            time.sleep(1)
    return False


def end_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the head's process group, SIGKILL to whatever is left after 20 s."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + grace
        while time.monotonic() < end:
            proc.poll()  # reap the leader: a zombie still counts as a member of its group
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)


@pytest.fixture(scope="module")
def head():
    """A one-node Ray cluster with its dashboard (the Jobs API) on free loopback ports."""
    gcs, dash, listen, grpc, metrics, env_agent, client, node, obj = free_ports(9)
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: socket paths are limited
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
           "--node-ip-address", "127.0.0.1", "--port", str(gcs), "--dashboard-host", "127.0.0.1",
           "--dashboard-port", str(dash), "--dashboard-agent-listen-port", str(listen),
           "--dashboard-agent-grpc-port", str(grpc), "--metrics-export-port", str(metrics),
           "--runtime-env-agent-port", str(env_agent), "--ray-client-server-port", str(client),
           "--node-manager-port", str(node), "--object-manager-port", str(obj),
           "--num-cpus", "2", "--temp-dir", temp, "--include-dashboard", "true",
           "--disable-usage-stats"]  # fmt: skip
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")  # jobs run `python`
    env.pop("RAY_ADDRESS", None)
    log = open(Path(temp) / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        assert up(f"{address}/api/version", 120), (Path(temp) / "head.log").read_text()[-3000:]
        yield address
    finally:
        end_group(proc)
        log.close()
    ps = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True).stdout.split()
    left = [pid for pid, group in zip(ps[::2], ps[1::2], strict=True) if group == str(proc.pid)]
    assert not left, f"Ray processes left in the head's process group: {left}"


SHORT = ["train.steps=40", "train.eval_every=20", "train.checkpoint_every=20", "tracking.wandb=disabled"]


def test_submit_follows_a_digits_job_to_succeeded(head, tmp_path, capsys, monkeypatch):
    from shiftray.cli import main

    monkeypatch.chdir(ROOT)  # the working directory that is uploaded: this checkout
    out, storage = tmp_path / "runs", tmp_path / "storage"  # what a cluster's nodes share
    rc = main(["submit", "jobs/digits/mnist-usps-erm.yaml", "--address", head,
               "--output-dir", str(out), f"tracking.storage_path={storage}", *SHORT])  # fmt: skip
    logs = capsys.readouterr()
    assert rc == 0, logs.err[-3000:] + logs.out[-3000:]
    assert "SUCCEEDED" in logs.err
    run = out / "mnist-usps-erm"
    result = json.loads((run / "result.json").read_text())
    assert result["step"] == 40
    assert (run / "checkpoint_00000040" / "model.safetensors").is_file()
    assert (storage / "mnist-usps-erm" / "checkpoint_00000040" / "model.safetensors").is_file()
    job_id = logs.err.split("submitted ")[1].split()[0]
    assert main(["status", job_id, "--address", head]) == 0
    assert f"{job_id}: SUCCEEDED" in capsys.readouterr().out
    assert main(["logs", job_id, "--address", head]) == 0
    assert "step" in capsys.readouterr().out  # the driver's own output, kept by Ray


def test_stop_ends_a_running_job(head, tmp_path, capsys, monkeypatch):
    from shiftray.cli import main
    from shiftray.cluster.submit import client

    monkeypatch.chdir(ROOT)
    rc = main(["submit", "jobs/digits/mnist-usps-erm.yaml", "--address", head, "--no-wait",
               "--output-dir", str(tmp_path), "train.steps=100000", "tracking.wandb=disabled"])  # fmt: skip
    assert rc == 0
    job_id = capsys.readouterr().out.strip().splitlines()[-1]
    jobs = client(head)
    end = time.monotonic() + 120
    while str(jobs.get_job_status(job_id).value) != "RUNNING" and time.monotonic() < end:
        time.sleep(1)
    assert str(jobs.get_job_status(job_id).value) == "RUNNING"
    assert main(["stop", job_id, "--address", head]) == 0
    assert f"{job_id}: STOPPED" in capsys.readouterr().out
    assert str(jobs.get_job_status(job_id).value) == "STOPPED"
