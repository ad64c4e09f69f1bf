"""bench/accuracy.py's results file: a run never writes over the committed results unless
asked (--update merges by key), every new row carries its provenance, task names have a
shell-safe spelling. Training is replaced by a stub (no Ray, no data)."""

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ROOT

PROVENANCE = {"commit", "dirty", "spec_sha256", "torch", "ray", "date", "machine", "cpus"}


@pytest.fixture
def accuracy(monkeypatch, tmp_path):
    """The script's module with training stubbed, runs in threads of this process, the
    default output folder and the committed results moved under tmp_path."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import accuracy

    calls = []

    def fake_train(job, overrides, run_dir):
        calls.append((job, list(overrides)))
        return {"target_acc": 61.25}, 10

    monkeypatch.setattr(accuracy, "_train", fake_train)
    monkeypatch.setattr(accuracy, "ProcessPoolExecutor", ThreadPoolExecutor)
    monkeypatch.setattr("torch.set_num_threads", lambda n: None)  # keep this process's setting
    monkeypatch.setattr(accuracy, "RUNS", tmp_path / "runs")
    committed = tmp_path / "results" / "accuracy.json"
    committed.parent.mkdir()
    rows = json.loads((ROOT / "bench/results/accuracy.json").read_text())
    for row in rows:  # the committed rows as before any carried provenance
        for field in ("provenance", *PROVENANCE, "cpus", "command"):
            row.pop(field, None)
    committed.write_text(json.dumps(rows, indent=1))
    committed.with_suffix(".md").write_bytes((ROOT / "bench/results/accuracy.md").read_bytes())
    monkeypatch.setattr(accuracy, "COMMITTED", committed)
    accuracy.calls = calls
    return accuracy


ONE = ["--suites", "digits", "--methods", "erm", "--seeds", "0", "--procs", "1"]


def test_a_run_without_update_leaves_the_committed_results_alone(accuracy, tmp_path):
    real = {p: p.read_bytes() for p in (ROOT / "bench/results").glob("accuracy.*")}
    committed = {p: p.read_bytes() for p in accuracy.COMMITTED.parent.iterdir()}
    accuracy.main([*ONE, "--tasks", "mnist:usps"])
    assert {p: p.read_bytes() for p in accuracy.COMMITTED.parent.iterdir()} == committed
    assert {p: p.read_bytes() for p in (ROOT / "bench/results").glob("accuracy.*")} == real
    (out,) = (tmp_path / "runs").glob("accuracy-*.json")  # a new file of its own
    (row,) = json.loads(out.read_text())
    assert (row["task"], row["method"], row["seed"], row["target_acc"]) == (
        "mnist->usps",
        "erm",
        0,
        61.25,
    )
    assert out.with_suffix(".md").exists()
    assert [job for job, _ in accuracy.calls] == ["jobs/digits/mnist-usps-erm.yaml"]
    # the committed file as --out needs --update
    with pytest.raises(SystemExit) as e:
        accuracy.main([*ONE, "--out", str(accuracy.COMMITTED)])
    assert e.value.code == 2
    assert {p: p.read_bytes() for p in accuracy.COMMITTED.parent.iterdir()} == committed


def test_new_rows_carry_their_provenance(accuracy, tmp_path):
    import torch

    accuracy.main([*ONE, "--tasks", "usps:mnist", "--out", str(tmp_path / "a.json")])
    (row,) = json.loads((tmp_path / "a.json").read_text())
    pv = row  # the provenance fields stand beside the result
    assert PROVENANCE <= set(pv)
    in_git = (ROOT / ".git").exists()  # a source tarball has no commit to name
    assert re.fullmatch("[0-9a-f]{40}", pv["commit"]) or not in_git
    assert isinstance(pv["dirty"], bool)
    assert pv["torch"] == torch.__version__.split("+")[0] or pv["torch"] == torch.__version__
    assert pv["ray"] and pv["machine"] and pv["cpus"] >= 1 and pv["date"][:2] == "20"
    # the sha256 of the resolved spec, as shiftray dumps it
    import hashlib

    from shiftray.config.load import dump_spec, load_spec

    spec = load_spec(
        ROOT / "jobs/digits/usps-mnist-erm.yaml", ["train.seed=0", "tracking.wandb=disabled"]
    )
    assert pv["spec_sha256"] == hashlib.sha256(dump_spec(spec).encode()).hexdigest()


def test_update_merges_by_key_and_redoes_the_rows_without_provenance(accuracy, capsys):
    committed = accuracy.COMMITTED
    old = json.loads(committed.read_text())
    assert not any("commit" in r for r in old)  # the fixture's rows carry none
    accuracy.main([*ONE, "--tasks", "mnist:usps", "--update"])
    new = json.loads(committed.read_text())
    assert len(new) == len(old)  # replaced by key, nothing added or lost
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    ((before, after),) = changed
    assert accuracy.key(before) == accuracy.key(after) == ("digits", "mnist->usps", "erm", 0)
    assert after["target_acc"] == 61.25 and PROVENANCE <= set(after)
    assert committed.with_suffix(".md").read_text() == accuracy.summary_text(new)

    # the row with provenance is done; the same row of seed 1 (none) is redone
    capsys.readouterr()
    accuracy.calls.clear()
    accuracy.main([*ONE[:-4], "--seeds", "0,1", "--procs", "1", "--tasks", "mnist:usps",
                   "--update", "--skip-done", "--redo-unprovenanced"])  # fmt: skip
    assert len(accuracy.calls) == 1 and "train.seed=1" in accuracy.calls[0][1]
    accuracy.calls.clear()
    accuracy.main([*ONE, "--tasks", "mnist:usps", "--update", "--skip-done"])
    assert accuracy.calls == []  # done, with or without provenance

    capsys.readouterr()
    accuracy.main(["--missing-provenance"])
    out = capsys.readouterr().out
    assert f"{len(old) - 2} of {len(old)} rows in {committed} lack provenance" in out
    assert "digits mnist->usps erm seed 0" not in out and "digits mnist->usps erm seed 2" in out
    assert (
        "python bench/accuracy.py --update --skip-done --redo-unprovenanced --suites digits "
        "--methods erm --seeds 0,1,2 --tasks mnist:usps,usps:mnist" in out
    )
    accuracy.main(["--summary-only"])
    out = capsys.readouterr().out
    assert "| digits | mnist->usps |" in out
    assert "2 rows from " in out and f"{len(old) - 2} rows without provenance" in out


def test_task_names_have_a_shell_safe_spelling(accuracy):
    assert accuracy.task_names("mnist:usps,b->d, k:e") == ["mnist->usps", "b->d", "k->e"]
    with pytest.raises(SystemExit) as e:
        accuracy.main([*ONE, "--tasks", "mnist:svhn"])
    assert e.value.code == 2 and accuracy.calls == []
