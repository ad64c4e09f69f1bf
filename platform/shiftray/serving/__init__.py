"""Ray Serve endpoints for trained run directories: KServe V1 and Open Inference Protocol V2,
dynamic batching, several models per replica, validated input and a per-input shift signal.

``import_path: shiftray.serving:build_app`` in a Ray Serve config file; ``shiftray serve RUN_DIR``
on the command line.
"""

from __future__ import annotations

from typing import Any


def build_app(args: dict[str, Any]):
    """The Ray Serve application (see `shiftray.serving.app.build_app`)."""
    from shiftray.serving.app import build_app as build

    return build(args)


__all__ = ["build_app"]
