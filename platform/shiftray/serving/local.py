"""Serving on this machine: an embedded Ray, Serve's HTTP proxy, the application (`shiftray
serve`), and the demo client that `make demo` ends with."""

from __future__ import annotations

import os
import time
from pathlib import Path

from shiftray.serving.args import AppArgs


def local_environment() -> None:
    """Settings for a Ray started here (before ray.init: its processes inherit them)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local cluster: no token
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")  # slow 2-core start


def start(args: AppArgs, host: str = "127.0.0.1", port: int = 8000, name: str = "shiftray"):
    """Start Ray (unless connected), Serve on host:port and the application; returns the cards."""
    local_environment()
    import ray
    from ray import serve

    from shiftray.serving.app import build_app
    from shiftray.serving.catalog import inspect_model

    paths = args.named_paths()
    cards = [inspect_model(n, p) for n, p in paths.items()]
    if not any(c.ready for c in cards):
        from shiftray.errors import UserInputError

        reasons = "\n  ".join(f"{c.name}: {c.reason}" for c in cards)
        raise UserInputError(f"no model can be served:\n  {reasons}")
    if not ray.is_initialized():  # room for the ingress and every model replica, even on 2 cores
        need = 1 + (args.replicas or 1)
        ray.init(num_cpus=max(os.cpu_count() or 1, need), include_dashboard=False,
                 log_to_driver=False)  # fmt: skip
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(args), name=name, route_prefix="/")
    return cards


def describe(cards, base: str) -> str:
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
    return (
        f"serving at {base}  (OpenAPI: {base}/docs)\n"
        f"  curl {base}/v1/models\n"
        f"  curl -X POST {base}/v1/models/{cards[0].name}:predict "
        "-H 'content-type: application/json' -d '{\"instances\": [...]}'"
    )


def serve_forever(args: AppArgs, host: str, port: int) -> int:
    import ray
    from ray import serve

    cards = start(args, host, port)
    print(describe(cards, f"http://{host}:{port}"), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_dir_arg(text: str) -> tuple[str, str]:
    """``RUN_DIR`` (named by its folder) or ``NAME=RUN_DIR``."""
    if "=" in text:
        name, path = text.split("=", 1)
        return name, path
    return Path(text).resolve().name, text
