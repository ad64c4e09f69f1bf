"""`build_app`: the Ray Serve application, one deployment (`shiftray.serving.routes.ModelServer`)
that is its own HTTP and gRPC ingress and holds the multiplexed, batched models."""

from __future__ import annotations

from typing import Any

from ray import serve

from shiftray.serving.args import AppArgs


def build_app(args: dict[str, Any] | AppArgs) -> serve.Application:
    """The application for a Ray Serve config file (``import_path: shiftray.serving:build_app``)
    or `shiftray serve`: ``args`` as `AppArgs` (or its dict)."""
    from shiftray.serving.routes import ModelServer

    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    if args.auth is not None:  # a bad keys file fails here, before anything is deployed
        from shiftray.serving.auth import KeyRing

        KeyRing.load(args.auth.keys_file)
    options: dict[str, Any] = {  # Serve's own backpressure: the cheapest place to refuse
        "max_ongoing_requests": args.max_ongoing_requests(),
        "max_queued_requests": args.max_queued_requests,
        "backpressure_config": {"status_code": 503, "retry_after_s": 1},
    }
    if args.replicas is not None:
        options["num_replicas"] = args.replicas
    if args.device == "cuda":  # Ray hides every GPU from an actor that asks for none
        options["ray_actor_options"] = {"num_gpus": 1}
    return ModelServer.options(**options).bind(args, args.named_paths())
