"""What the command modules share."""

from __future__ import annotations


def _split_args(items: list[str]) -> tuple[list[str], list[str]]:
    jobs = [a for a in items if "=" not in a]
    overrides = [a for a in items if "=" in a]
    return jobs, overrides
