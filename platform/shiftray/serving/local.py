"""Serving on this machine: an embedded Ray, HAProxy in front of the model replicas, the
application (`shiftray serve`), and a clean stop on SIGTERM.

`serving_environment` is the Ray Serve configuration shiftray serves with, locally and on
Kubernetes (the RayService manifests set the same variables): HAProxy as the ingress, which
hands each connection to a replica's own HTTP server (no Python proxy hop), and user code on the
replica's event loop. Measured with bench/serve_load.py; the variables are read when Ray starts,
so they are set before ``ray.init`` (the processes Ray starts inherit them).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

from shiftray.serving.args import AppArgs

SERVING_ENVIRONMENT = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",  # HAProxy -> replica, no Python proxy in between
    # Ray starts its workers (Serve's replicas, HAProxy's manager and HAProxy itself) at nice 15,
    # right for background training, wrong for the process answering requests: at 15 anything
    # else on the node (a client, a sidecar) takes the cores first
    "RAY_worker_niceness": "0",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",  # no thread hop per request
    # a request whose replica died before answering is replayed on another (predictions are
    # idempotent); Ray's default retries connection failures only
    "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response response-timeout",
    "RAY_SERVE_HAPROXY_RETRIES": "2",
    # Ray's per-request metrics from HAProxy are a log line per request that a Python collector
    # parses (a regex and a metric update per request, on the same cores): off, a replica's
    # refusals under overload came back 3x sooner (bench/serve_load.py's overload row). HAProxy's
    # own counters (its Prometheus frontend) and shiftray's metrics stay.
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
}
LOCAL_ENVIRONMENT = {
    "RAY_AUTH_MODE": "disabled",  # a local cluster: no token
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",  # slow 2-core start
    # a replica stopping drains for this long before it exits (30 s by default, for an outside
    # load balancer to notice); locally HAProxy is told at once
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}
HAPROXY_PORTS = ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving_environment() -> None:
    """Set (where unset) the serving configuration, before Ray starts or Serve is imported."""
    for key, value in (SERVING_ENVIRONMENT | LOCAL_ENVIRONMENT).items():
        os.environ.setdefault(key, value)
    for key in HAPROXY_PORTS:  # HAProxy's fixed 9101/8404 collide between two local servers
        os.environ.setdefault(key, str(free_port()))


def start(args: AppArgs, host: str = "127.0.0.1", port: int = 8000, name: str = "shiftray",
          grpc_port: int | None = None):  # fmt: skip
    """Start Ray (unless connected), Serve on host:port (and gRPC on grpc_port) and the
    application; returns the model cards."""
    serving_environment()
    import ray
    from ray import serve

    from shiftray.serving.app import build_app
    from shiftray.serving.catalog import inspect_model
    from shiftray.serving.protocols.oip_grpc import SERVICER

    cards = [inspect_model(n, p) for n, p in args.named_paths().items()]
    if not any(c.ready for c in cards):
        from shiftray.errors import UserInputError

        reasons = "\n  ".join(f"{c.name}: {c.reason}" for c in cards)
        raise UserInputError(f"no model can be served:\n  {reasons}")
    if not ray.is_initialized():  # room for every model replica and Serve's actors, on 2 cores
        need = 2 + (args.replicas or 1)
        ray.init(num_cpus=max(os.cpu_count() or 1, need), include_dashboard=False,
                 log_to_driver=False)  # fmt: skip
    grpc = {"port": grpc_port, "grpc_servicer_functions": [SERVICER]} if grpc_port else None
    serve.start(http_options={"host": host, "port": port}, grpc_options=grpc)
    serve.run(build_app(args), name=name, route_prefix="/")
    return cards


def describe(cards, base: str, grpc_port: int | None = None) -> str:
    from shiftray.display import print_table

    rows = []
    for c in cards:
        t = c.training
        acc = t.get("target_acc")
        rows.append({
            "model": c.name, "ready": "yes" if c.ready else "NO",
            "job": t.get("job", ""), "target_acc": "" if acc is None else f"{acc:.1f}",
            "input": "" if c.input is None else f"{c.input.kind} {list(c.input.shape)}",
            "shift signal": ", ".join(c.shift_signal) if c.ready else c.reason[:80],
        })  # fmt: skip
    print_table(rows, list(rows[0]))
    grpc = f"\n  gRPC (Open Inference Protocol) at {base.split('://')[1].split(':')[0]}:{grpc_port}"
    return (
        f"serving at {base}  (OpenAPI: {base}/docs)" + (grpc if grpc_port else "") + "\n"
        f"  curl {base}/v1/models\n"
        f"  curl -X POST {base}/v1/models/{cards[0].name}:predict "
        "-H 'content-type: application/json' -d '{\"instances\": [...]}'"
    )


def serve_forever(args: AppArgs, host: str, port: int, grpc_port: int | None = None,
                  grace_s: float = 30.0) -> int:  # fmt: skip
    """Serve until SIGTERM or SIGINT, then stop cleanly within ``grace_s`` (`stop`)."""
    cards = start(args, host, port, grpc_port=grpc_port)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init: Ray's core installs its own
        signal.signal(sig, lambda *_: stopping.set())  # (a stack dump and abort on SIGTERM)
    print(describe(cards, f"http://{host}:{port}", grpc_port), flush=True)
    stopping.wait()
    return stop(grace_s)


def stop(grace_s: float) -> int:
    """Stop accepting, let requests in flight finish (Serve drains each replica), shut Ray down,
    and end every process this one started (Ray's agents included), all within ``grace_s``.
    Returns the exit status: 0 when everything stopped in time."""
    import psutil
    import ray
    from ray import serve

    deadline = time.monotonic() + grace_s
    print("stopping: finishing requests in flight", flush=True)
    children = psutil.Process().children(recursive=True)
    done = threading.Event()

    def shut_down() -> None:
        try:
            serve.shutdown()
            ray.shutdown()
        finally:
            done.set()

    threading.Thread(target=shut_down, daemon=True).start()
    in_time = done.wait(max(1.0, deadline - time.monotonic() - 3))
    left = _end(children, max(0.5, deadline - time.monotonic()))
    print(f"stopped{'' if in_time else ' (Serve did not stop in time)'}"
          f"{f'; {left} process(es) did not exit' if left else ''}", flush=True)  # fmt: skip
    return 0 if in_time and not left else 1


def _end(procs, wait_s: float) -> int:
    """SIGTERM the processes still alive, SIGKILL what is left after ``wait_s``; how many
    survived even that."""
    import psutil

    alive = [p for p in procs if p.is_running()]
    for p in alive:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=wait_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=2)
    return len(alive)


def run_dir_arg(text: str) -> tuple[str, str]:
    """``RUN_DIR`` (named by its folder) or ``NAME=RUN_DIR``."""
    if "=" in text:
        name, path = text.split("=", 1)
        return name, path
    return Path(text).resolve().name, text
