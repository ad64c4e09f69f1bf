"""Where a result came from: the git commit of shiftray's own checkout and whether its tree had
uncommitted changes (searches and benchmarks record both beside their figures)."""

from __future__ import annotations

import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2]  # the checkout (an editable install's source)


def git(*args: str) -> str:
    """``git ARGS`` in shiftray's checkout; "" when there is no git or no checkout."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=SOURCE, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def commit(short: bool = True) -> str:
    return git("rev-parse", *(["--short"] if short else []), "HEAD")


def dirty() -> bool | None:
    """Uncommitted changes to tracked files; None outside a checkout."""
    if not commit():
        return None
    return bool(git("status", "--porcelain", "--untracked-files=no"))
