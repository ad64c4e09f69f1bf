"""The README's ```bash blocks are commands users copy: run every one of them."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_has_runnable_blocks():
    assert BLOCKS


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.split()[1] if len(b.split()) > 1 else b)
def test_readme_block_runs(block, real_data, tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for line in block.splitlines():
        cmd = line.split("  #")[0].strip()
        if not cmd:
            continue
        proc = subprocess.run(
            cmd, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
