"""The benchmark scripts run (tiny sizes): they must be ready for the real machines."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.ray


def test_gpu_dann_script_smoke_on_cpu(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench/gpu_dann.py"), "--device", "cpu", "--model", "test_resnet",
           "--image-size", "32", "--batch", "4", "--ref-batch", "2", "--steps", "2", "--warmup", "1",
           "--no-compile", "--out-dir", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out,) = tmp_path.glob("cpu-smoke-*.json")
    rows = json.loads(out.read_text())["rows"]
    assert [r["config"] for r in rows] == [
        "reference fp32 eager", "shiftray step", "supervised step", "shiftray step in Ray Train (1 worker)"
    ]  # fmt: skip
    assert all(r["images_per_s"] > 0 for r in rows)
