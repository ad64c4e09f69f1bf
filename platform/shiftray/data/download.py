"""Fetch a benchmark's files before a run needs them (`shiftray data download`).

Reading a domain split finds its files (`shiftray.data.files.find_files`: SHIFTRAY_DATA_DIR, the
cache, then a checked download from the original source or the SHIFTRAY_DATA_URL mirror), so
fetching is reading each split once. Takes plain arguments: the benchmark, its options and the
domains; the command line resolves a job spec to them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from shiftray.data.readers.base import Benchmark


@dataclass(frozen=True)
class Fetched:
    domain: str
    split: str
    rows: int


def fetch(bench: type[Benchmark], opts: BaseModel, domains: list[str]) -> list[Fetched]:
    """Read every split of ``domains`` once (downloading what is found nowhere); rows per split."""
    out = []
    for domain in domains:
        for split in bench.splits:
            out.append(Fetched(domain, split, len(bench.read(domain, split, opts))))
    return out
