"""`shiftray serve`: run directories on Ray Serve (and `shiftray keys`, in shiftray.serving.keys_cli)."""

from __future__ import annotations

import argparse


def cmd_serve(args: argparse.Namespace) -> int:
    from shiftray.api import serve
    from shiftray.serving.local import run_dir_arg

    models = dict(run_dir_arg(a) for a in args.run_dirs)
    return serve(
        models, port=args.port, grpc_port=args.grpc_port, host=args.host,
        grace_s=args.grace_period, models_root=args.models_root, replicas=args.replicas,
        max_batch_size=args.max_batch_size, device=args.device, threads=args.threads,
        **({"auth": {"keys_file": args.keys_file}} if args.keys_file else {}),
    )  # fmt: skip


def add_parsers(sub) -> None:
    sv = sub.add_parser(
        "serve",
        help="serve trained run directories (Ray Serve: KServe V1 and the Open Inference "
        "Protocol over HTTP and gRPC)",
    )
    sv.add_argument("run_dirs", nargs="*", metavar="RUN_DIR|NAME=RUN_DIR")
    sv.add_argument("--models-root", help="serve every run directory inside, by folder name")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--replicas", type=int, default=None, help="model replicas (default 1)")
    sv.add_argument("--max-batch-size", type=int, default=32)
    sv.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    sv.add_argument("--threads", type=int, default=None, help="torch threads per replica")
    sv.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="also serve the Open Inference Protocol over gRPC on this port",
    )
    sv.add_argument(
        "--keys-file",
        default=None,
        help="API keys (shiftray keys add): every model route then needs a key",
    )
    sv.add_argument(
        "--grace-period",
        type=float,
        default=30.0,
        help="seconds a SIGTERM gives requests in flight before the server exits",
    )
    sv.set_defaults(func=cmd_serve)
