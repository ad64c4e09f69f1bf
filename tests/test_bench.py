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
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [r["config"] for r in rows] == [
        "reference fp32 eager", "shiftray step", "supervised step", "shiftray step in Ray Train (1 worker)",
        "fp32 eager at shiftray's batch",
    ]  # fmt: skip
    assert all(r["images_per_s"] > 0 for r in rows)
    assert result["complete"]
    assert set(result["ratios"]) == {
        "shiftray_vs_reference",
        "shiftray_vs_supervised",
        "ray_vs_bare",
        "shiftray_vs_fp32_same_batch",
    }
    assert result["command"].endswith(f"--out-dir {tmp_path}") and result["versions"]["torch"]
    bad = subprocess.run(cmd + ["--rows", "shiftray,gpu"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "unknown ['gpu']" in bad.stderr


def test_accuracy_summary_shows_partial_seed_counts(tmp_path):
    rows = [
        {"benchmark": "amazon", "task": t, "method": m, "seed": s, "target_acc": acc}
        for t, m, s, acc in [("b->d", "erm", 0, 70.0), ("b->d", "erm", 1, 72.0), ("b->e", "erm", 0, 80.0),
                             ("b->d", "dann", 0, 75.0)]
    ]  # fmt: skip
    out = tmp_path / "accuracy.json"
    out.write_text(json.dumps(rows))
    proc = subprocess.run([sys.executable, str(ROOT / "bench/accuracy.py"), "--summary-only", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = out.with_suffix(".md").read_text()
    # erm: mean of the task means (71 and 80), over 2 tasks with 1 to 2 seeds each
    assert "| amazon | 75.5 (2 tasks, 1-2 seeds) | 75.0 (1 tasks, 1 seeds) |" in md


@pytest.mark.parametrize(
    ("method", "phase1", "param"),
    [("shot", "source", "source_checkpoint"), ("distill", "dann", "teacher")],
)
def test_accuracy_two_phase_methods_train_their_first_phase(monkeypatch, method, phase1, param):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import accuracy

    calls = []

    def fake_train(job, overrides, run_dir):
        calls.append((job, list(overrides), run_dir))
        return {"target_acc": 50.0}, 10

    monkeypatch.setattr(accuracy, "_train", fake_train)
    monkeypatch.setattr("torch.set_num_threads", lambda n: None)  # keep this process's setting
    (task,) = [t for t in accuracy.tasks(["office"], [method], [2]) if t.task == "C->D"]
    row = accuracy.run_task(task)
    (job1, ov1, dir1), (job2, ov2, _) = calls
    assert (
        job1 == f"jobs/office-caltech/{phase1}.yaml"
        and job2 == f"jobs/office-caltech/{method}.yaml"
    )
    pair = ["data.source=caltech", "data.target=dslr", "train.seed=2"]
    assert ov1 == pair  # the first phase: same pair and seed
    assert ov2 == [*pair, f"method.params.{param}={dir1}"]  # the second reads the first's run
    assert row["method"] == method and row["target_acc"] == 50.0


def test_decode_script_smoke(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench/decode.py"), "--rounds", "1", "--scale", "0.01",
           "--sizes", "20", "--out-name", str(tmp_path / "decode")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "decode.json").read_text())
    got = {(r["format"], r["how"], r["decoder"]) for r in result["rows"]}
    assert ("JPEG", "batched", "torchcodec") in got and ("PNG", "single", "PIL") in got
    assert all(r["max_abs_diff"] == 0 for r in result["rows"] if r["decoder"] == "torchcodec")
    assert result["libraries"]["torchcodec"] and result["commit"] is not None


def test_label_free_table_compares_the_same_tasks():
    sys.path.insert(0, str(ROOT / "bench"))
    from label_free_table import table

    def row(task, seed, acc, commit="abcdef0123"):
        return {"benchmark": "amazon", "task": task, "method": "dann", "seed": seed,
                "target_acc": acc, "commit": commit, "dirty": False}  # fmt: skip

    free = [row("b->d", 0, 80.0), row("b->d", 1, 82.0), row("b->e", 0, 70.0)]
    earlier = [row("b->d", 0, 78.0), row("d->b", 0, 60.0)]
    text = table(free, earlier)
    # new: mean of 81 and 70; the difference only over b->d (81 - 78); published: b->d, b->e
    assert "| amazon | dann | 75.5 (2 tasks, 1-2 seeds) | 69.0 (2 tasks, 1 seeds) | +3.0 | 75.8 (2 tasks) |" in text
    assert "commits: abcdef0" in text
