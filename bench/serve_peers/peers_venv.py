"""Create the peers' venv for bench/serve_load.py: LitServe and KServe on top of .venv.

    .venv/bin/python bench/serve_peers/peers_venv.py [--path .venv-peers]

KServe pins psutil<6 (and protobuf<7), so it never goes into .venv. The peers' venv sees
.venv's packages through a .pth file (torch, shiftray and the rest are the same files), and pip
installs there only what .venv lacks or pins differently. Run with .venv's python; checks that
``pip freeze`` of .venv is the same after. Idempotent.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
from pathlib import Path

PEERS = ("kserve==0.21.0", "litserve==0.2.19")
ROOT = Path(__file__).resolve().parents[2]


def freeze() -> str:
    cmd = [sys.executable, "-m", "pip", "freeze"]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--path", default=str(ROOT / ".venv-peers"))
    target = Path(p.parse_args().path).resolve()
    if sys.prefix == sys.base_prefix:
        print("run this with the project's venv python (.venv/bin/python)", file=sys.stderr)
        return 2
    python = target / "bin/python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    main_site = sysconfig.get_path("purelib")
    pth = Path(site.stdout.strip()) / "_shiftray_main_venv.pth"
    pth.write_text(f"import site; site.addsitedir({main_site!r})\n")  # .pth files there too
    before = freeze()
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS], check=True)
    if freeze() != before:
        print(f"{sys.prefix} changed: pip installed into it; check `pip freeze`", file=sys.stderr)
        return 1
    check = "import kserve, litserve, shiftray, torch; print(kserve.__file__, litserve.__file__)"
    subprocess.run([str(python), "-c", check], check=True)
    print(f"{target}: {', '.join(PEERS)} over {sys.prefix} (unchanged)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
