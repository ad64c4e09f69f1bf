"""The image's locked dependencies: shiftray's runtime requirements, closed over what they
require, at the versions installed here (the ones the tests pass with).

    shiftray k8s lock            # writes k8s/requirements.lock

Extras are followed (``ray[train,tune,serve]`` brings Ray Train's, Tune's and Serve's
requirements); shiftray's own extras (dev, tune, pretrained) are not. A local version label
(torch's ``+cu130``) is dropped, so the pin matches the CPU and the CUDA wheel alike, and
torch's CUDA runtime (``nvidia-*``, ``cuda-*``, triton) is left to torch itself: the CUDA wheel
pins its own, and the CPU wheel needs none.
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from shiftray.errors import UserInputError

CUDA_RUNTIME = ("nvidia-", "cuda-")  # and triton (the compiler; tritonclient is ours)


def _cuda_runtime(name: str) -> bool:
    return name == "triton" or name.startswith(CUDA_RUNTIME)


def closure(root: str = "shiftray") -> dict[str, str]:
    """canonical name -> installed version, for ``root``'s runtime requirements and theirs."""
    found: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise UserInputError(f"{name} is required but not installed here: the lock is "
                                 "written from this environment (make install)") from None  # fmt: skip
        if _cuda_runtime(name):
            continue
        if name != root:
            found[name] = Version(dist.version).public
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in wanted):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return found


def lock_text(root: str = "shiftray") -> str:
    pins = closure(root)
    head = ("# shiftray's runtime dependencies at the versions its tests pass with; written by\n"
            "# `shiftray k8s lock` (k8s/Dockerfile installs it). Do not edit by hand.\n")  # fmt: skip
    return head + "".join(f"{n}=={v}\n" for n, v in sorted(pins.items()))


def write_lock(path: str | Path) -> int:
    text = lock_text()
    Path(path).write_text(text)
    return text.count("==")
