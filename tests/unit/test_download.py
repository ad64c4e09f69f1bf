"""`make demo`'s data step on a machine without the data: an empty SHIFTRAY_DATA_DIR and cache,
the files downloaded over real HTTP from a loopback server (a mirror, SHIFTRAY_DATA_URL), each
checked against its sha256 before it lands; a file that does not match never lands."""

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO_FILES = ["mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz", "usps/usps.h5"]


def demo_data_step() -> str:
    """The Makefile's own command (the demo recipe's `data download` line)."""
    recipe = (ROOT / "Makefile").read_text().split("\ndemo:")[1].split("\n\n")[0]
    line = next(ln.strip() for ln in recipe.splitlines() if "data download" in ln)
    return re.sub(r"^\$\(BIN\)/", "", line)


@pytest.fixture
def mirror(real_data, tmp_path):
    """A loopback HTTP server over a copy of the demo's files; yields (url, folder, requests)."""
    root = tmp_path / "mirror"
    for f in DEMO_FILES:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real_data / f, root / f)
    served: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # quiet; remember what was asked for
            served.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", root, served
    server.shutdown()


def _env(tmp_path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SHIFTRAY_OFFLINE",)}
    (tmp_path / "empty").mkdir(exist_ok=True)
    env |= {"SHIFTRAY_DATA_DIR": str(tmp_path / "empty"), "SHIFTRAY_CACHE_DIR": str(tmp_path / "cache"),
            "SHIFTRAY_DATA_URL": url, "HF_HUB_OFFLINE": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    return env


def test_makefile_forces_no_offline_switch_and_names_no_outside_path():
    lines = [ln for ln in (ROOT / "Makefile").read_text().splitlines() if not ln.startswith("#")]
    for name in ("HF_HUB_OFFLINE", "SHIFTRAY_OFFLINE", "SHIFTRAY_DATA_DIR"):
        assert not [ln for ln in lines if name in ln], name  # set by the user (or CI), not here
    assert not [ln for ln in lines if "../" in ln]


def test_demo_data_step_downloads_into_an_empty_cache(mirror, tmp_path):
    url, root, served = mirror
    proc = subprocess.run(demo_data_step(), shell=True, cwd=ROOT, env=_env(tmp_path, url),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "usps/test: 2007 rows" in proc.stdout and "mnist/train: 10000 rows" in proc.stdout
    for f in DEMO_FILES:  # each fetched once over HTTP, byte-identical in the cache
        assert served.count(f"/{f}") == 1, served
        assert (tmp_path / "cache" / f).read_bytes() == (root / f).read_bytes()
    assert not any((tmp_path / "empty").iterdir())  # the data dir is only read


def test_a_download_that_does_not_match_its_checksum_never_lands(mirror, tmp_path):
    url, root, _ = mirror
    (root / "usps/usps.h5").write_bytes(b"not the USPS file")
    proc = subprocess.run(["shiftray", "data", "download", "digits"], cwd=ROOT,
                          env=_env(tmp_path, url), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode != 0
    assert "checksum mismatch" in proc.stderr and "usps/usps.h5" in proc.stderr
    assert not (tmp_path / "cache" / "usps" / "usps.h5").exists()
