"""Finding benchmark files: SHIFTRAY_DATA_DIR, then the user cache, then a checked download.

Downloads come from each file's original source, or from a mirror: with
``SHIFTRAY_DATA_URL=https://mirror.example/shiftray`` every file is fetched from
``<SHIFTRAY_DATA_URL>/<path>`` (the same relative path it has under the data dir), and checked
against the same checksum. ``SHIFTRAY_OFFLINE=1`` turns downloads off; the Hugging Face hub's
``HF_HUB_OFFLINE`` is the hub's own switch and does not stop benchmark downloads.

A missing file raises `DataNotFoundError` naming the files, every place looked, and where to
get them. Downloads go through pooch: streamed to a temporary file beside the target, checked
against the known sha256 (or md5, where that is all the host publishes) and moved into place
only if it matches, so a partial or wrong download is never used; failures are retried.
The search order and the error message stay here: pooch knows one cache folder, and it hashes
a file it finds there on every call, which the offline copy under SHIFTRAY_DATA_DIR (read-only,
gigabytes for DomainNet) must not pay. So pooch is asked only for the files found nowhere.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RemoteFile:
    """A benchmark file: where it lives under the data dir, where it comes from, its checksum."""

    path: str  # relative to the data dir, e.g. "usps/usps.h5"
    url: str
    sha256: str = ""
    md5: str = ""  # used where only an md5 is published (e.g. LIBSVM's usps.bz2)


RETRIES = 2  # a failed or mismatching download is tried again, after 1 s, then 2 s


class DataNotFoundError(FileNotFoundError):
    pass


def data_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("SHIFTRAY_DATA_DIR")
    if env:
        dirs.append(Path(env).expanduser())
    cache = os.environ.get("SHIFTRAY_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "shiftray", "data"
    )
    dirs.append(Path(cache).expanduser())
    return dirs


def offline() -> bool:
    return os.environ.get("SHIFTRAY_OFFLINE", "") not in ("", "0")


def source_url(f: RemoteFile) -> str:
    """Where ``f`` is downloaded from: the mirror (SHIFTRAY_DATA_URL) or its original source."""
    mirror = os.environ.get("SHIFTRAY_DATA_URL", "").rstrip("/")
    return f"{mirror}/{f.path}" if mirror else f.url


def _download(files: list[RemoteFile], cache: Path) -> None:
    """Fetch ``files`` into ``cache`` (same relative paths), each checked before it lands."""
    import pooch

    known = {f.path: f"sha256:{f.sha256}" if f.sha256 else f"md5:{f.md5}" for f in files}
    store = pooch.create(
        path=cache, base_url="", registry=known, urls={f.path: source_url(f) for f in files},
        retry_if_failed=RETRIES,
    )  # fmt: skip
    for f in files:
        try:
            store.fetch(f.path, downloader=pooch.HTTPDownloader(
                progressbar=sys.stderr.isatty(), timeout=30))  # fmt: skip
        except ValueError as e:  # pooch's hash check; the temporary file is already gone
            raise OSError(f"checksum mismatch for {source_url(f)}: {e}") from e


def find_files(benchmark: str, files: list[RemoteFile], download: bool = True) -> list[Path]:
    """Return local paths for ``files`` (all from one directory), downloading if allowed."""
    dirs = data_dirs()
    for d in dirs:
        if all((d / f.path).is_file() for f in files):
            return [d / f.path for f in files]
    problems: list[str] = []
    if download and not offline():
        cache = dirs[-1]
        try:
            _download([f for f in files if not (cache / f.path).is_file()], cache)
            return [cache / f.path for f in files]
        except OSError as e:  # requests' errors are OSErrors too
            problems.append(f"download failed: {e}")
    elif download:
        problems.append("not downloaded: offline (SHIFTRAY_OFFLINE is set)")
    where = "\n".join(
        f"  {d / f.path}{'' if (d / f.path).is_file() else '  (missing)'}"
        for d in dirs
        for f in files
    )
    sources = "\n".join(
        f"  {f.path}: {source_url(f)} ({'sha256 ' + f.sha256 if f.sha256 else 'md5 ' + f.md5})"
        for f in files
    )
    env = os.environ.get("SHIFTRAY_DATA_DIR")
    hint = f"SHIFTRAY_DATA_DIR={env}" if env else "SHIFTRAY_DATA_DIR is not set"
    raise DataNotFoundError(
        f"benchmark {benchmark!r} needs {len(files)} file(s); {hint}. Looked for:\n{where}\n"
        f"Get them from:\n{sources}\n"
        f"and put them under $SHIFTRAY_DATA_DIR (same relative paths)."
        + ("\n" + "\n".join(problems) if problems else "")
    )
