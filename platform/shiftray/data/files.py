"""Finding benchmark files: SHIFTRAY_DATA_DIR, then the user cache, then a checked download.

A missing file raises `DataNotFoundError` naming the files, every place looked, and where to
get them. Downloads are verified with sha256 (or, where the original host recompresses, the
md5 of the decompressed bytes) before they are moved into place, so a partial or wrong
download is never used.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RemoteFile:
    """A benchmark file: where it lives under the data dir, where it comes from, its checksum."""

    path: str  # relative to the data dir, e.g. "usps/usps.h5"
    url: str
    sha256: str = ""
    md5: str = ""  # used where only an md5 is published (e.g. LIBSVM's usps.bz2)


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
    return any(
        os.environ.get(v, "") not in ("", "0") for v in ("SHIFTRAY_OFFLINE", "HF_HUB_OFFLINE")
    )


def digest_of(path: Path, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(rf: RemoteFile, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(rf.url, timeout=30) as resp:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
        algo, want = ("sha256", rf.sha256) if rf.sha256 else ("md5", rf.md5)
        got = digest_of(Path(tmp), algo)
        if got != want:
            raise OSError(f"checksum mismatch for {rf.url}: {algo} {got}, expected {want}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
            for f in files:
                if not (cache / f.path).is_file():
                    _download(f, cache / f.path)
            return [cache / f.path for f in files]
        except OSError as e:
            problems.append(f"download failed: {e}")
    elif download:
        problems.append("not downloaded: offline (SHIFTRAY_OFFLINE or HF_HUB_OFFLINE is set)")
    where = "\n".join(
        f"  {d / f.path}{'' if (d / f.path).is_file() else '  (missing)'}"
        for d in dirs
        for f in files
    )
    sources = "\n".join(
        f"  {f.path}: {f.url} ({'sha256 ' + f.sha256 if f.sha256 else 'md5 ' + f.md5})"
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
