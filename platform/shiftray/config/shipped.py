"""The job specs shiftray ships (``jobs/<benchmark>/<name>.yaml``), found from a checkout or
from a pip install (its wheel puts them under ``<prefix>/share/shiftray/jobs``)."""

from __future__ import annotations

import sys
from pathlib import Path


def jobs_dir() -> Path | None:
    """The folder of the shipped job specs: the checkout's ``jobs/`` (an editable install),
    else the installed copy; None when neither is there."""
    here = Path(__file__).resolve().parents[3] / "jobs"  # platform/shiftray/config -> root
    for d in (here, Path(sys.prefix) / "share" / "shiftray" / "jobs"):
        if d.is_dir():
            return d
    return None


def shipped_jobs() -> dict[str, Path]:
    """``benchmark/name`` -> the spec file, for every shipped job spec."""
    root = jobs_dir()
    if root is None:
        return {}
    return {f"{p.parent.name}/{p.stem}": p for p in sorted(root.glob("*/*.yaml"))}


def about(path: Path) -> str:
    """A spec's first comment line: what it runs."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""
