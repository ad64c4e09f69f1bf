"""The command line: listing, validation and the errors a person sees."""

import json
import shutil

import pytest
import yaml
from conftest import ROOT, synthetic_spec
from shiftray.cli import main


def test_ls_lists_components(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for name in ("lenet", "mlp", "dann", "erm", "digits", "amazon", "office_caltech", "timm/<name>",
                 "hf/<name>", "clip/<name>"):  # fmt: skip
        assert name in out
    from shiftray.registry import METHODS

    for _, doc in METHODS.describe():  # whole sentences: a paragraph is never cut at a line end
        assert not doc or doc.rstrip().endswith((".", ")", ":", "]")), doc


def test_validate_reports_field_and_allowed_values(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(synthetic_spec(method={"name": "adda"})))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "method.name" in err and "unknown method 'adda'; registered: cdan, dann" in err
    assert (
        main(["validate", str(ROOT / "jobs/digits/mnist-usps-dann.yaml"), "optim.schedule=linear"])
        == 2
    )
    assert "optim.schedule" in capsys.readouterr().err


def test_run_with_missing_data_fails_before_training(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SHIFTRAY_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("SHIFTRAY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SHIFTRAY_OFFLINE", "1")
    job = str(ROOT / "jobs/amazon/dann.yaml")
    assert main(["run", job, f"tracking.output_dir={tmp_path}/runs"]) == 2
    err = capsys.readouterr().err
    assert "amazon_reviews/books_train.svmlight" in err and "SHIFTRAY_DATA_DIR" in err
    assert not (tmp_path / "runs").exists()  # nothing started


def test_run_in_process_prints_summary(capsys, tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(synthetic_spec(name="cli", train__steps=20)))
    assert main(["run", str(path), f"tracking.output_dir={tmp_path}", "--no-ray"]) == 0
    out = capsys.readouterr().out
    assert "target_acc" in out and str(tmp_path / "cli") in out


def test_data_inspect_real(capsys, real_data):
    assert main(["data", "inspect", "office_caltech"]) == 0
    out = capsys.readouterr().out
    assert "dslr" in out and "157" in out and "back_pack" in out


def test_resume_a_run_directory(capsys, tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(
        yaml.safe_dump(synthetic_spec(name="rr", train__steps=20, train__checkpoint_every=10))
    )
    assert main(["run", str(path), f"tracking.output_dir={tmp_path}", "--no-ray"]) == 0
    run_dir = tmp_path / "rr"
    shutil.rmtree(run_dir / "checkpoint_00000020")  # as if the driver died before step 20
    (run_dir / "result.json").unlink()
    assert main(["run", "--resume", str(run_dir), "--no-ray"]) == 0
    result = json.loads((run_dir / "result.json").read_text())
    assert result["step"] == 20 and result["resumed_from"] == 10
    first = (run_dir / "spec.yaml").read_text()
    # overrides at a resume: the run goes on with them, spec.yaml stays the spec it began with
    assert main(["run", "--resume", str(run_dir), "train.steps=30", "--no-ray"]) == 0
    assert json.loads((run_dir / "result.json").read_text())["step"] == 30
    assert (run_dir / "spec.yaml").read_text() == first and "steps: 20" in first
    resumes = [json.loads(x) for x in (run_dir / "resumes.jsonl").read_text().splitlines()]
    assert [r["overrides"] for r in resumes] == [["train.steps=30"]]
    assert main(["run", "--resume", str(tmp_path / "nothing"), "--no-ray"]) == 2
    assert "no spec.yaml" in capsys.readouterr().err


def test_a_changed_spec_never_reuses_a_finished_run(capsys, tmp_path):
    """Re-running a finished job with a changed field stops before training, naming the field;
    the same spec, or a changed one with --restart, runs."""
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(synthetic_spec(name="ch", train__steps=10)))
    args = ["run", str(path), f"tracking.output_dir={tmp_path}", "--no-ray", "--quiet"]
    assert main(args) == 0
    before = (tmp_path / "ch" / "result.json").read_text()
    assert main([*args, "optim.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr: 0.05 -> 0.5" in err and "--restart" in err and "--resume" in err
    assert (tmp_path / "ch" / "result.json").read_text() == before  # nothing ran
    assert main([*args, "train.eval_every=5"]) == 0  # bookkeeping: the same run
    assert main([*args, "optim.lr=0.5", "--restart"]) == 0


def test_restart_also_deletes_the_checkpoints_in_storage(capsys, tmp_path):
    """Ray Train resumes from <storage_path>/<name>: --restart that left it would resume."""
    store = tmp_path / "store"
    (store / "rs" / "checkpoint_00000010").mkdir(parents=True)
    (store / "other" / "checkpoint_00000010").mkdir(parents=True)
    spec = synthetic_spec(name="rs", train__steps=10,
                          tracking={"wandb": "disabled", "storage_path": str(store)})  # fmt: skip
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    args = ["run", str(path), f"tracking.output_dir={tmp_path}", "--no-ray", "--quiet"]
    assert main([*args, "--restart"]) == 0
    assert f"--restart: deleted {store}/rs" in capsys.readouterr().out
    assert not (store / "rs").exists() and (store / "other" / "checkpoint_00000010").is_dir()
    assert main([*args, "--restart"]) == 0  # nothing there: nothing said
    assert "deleted" not in capsys.readouterr().out


def test_an_internal_bug_keeps_its_traceback_a_bad_input_is_one_line(capsys, monkeypatch, tmp_path):
    """A KeyError inside shiftray is a bug: it propagates with its traceback. A wrong spec,
    a missing file or a run that does not fit is the user's to fix: one error line, exit 2."""
    from shiftray import cli
    from shiftray.cli import info

    def buggy(args):
        return {}["a key the code forgot"]

    monkeypatch.setattr(info, "cmd_ls", buggy)
    with pytest.raises(KeyError):
        cli.main(["ls"])
    assert cli.main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.startswith("error: job spec")


@pytest.mark.parametrize(
    ("env", "spec", "want"),
    [({}, "online", "online"), ({"WANDB_MODE": "disabled"}, "offline", "disabled"),
     ({"WANDB_DISABLED": "true"}, "online", "disabled"), ({"WANDB_MODE": "dryrun"}, "online", "offline"),
     ({"WANDB_MODE": "online"}, "disabled", "disabled"), ({"WANDB_MODE": "offline"}, "offline", "offline")],
)  # fmt: skip
def test_wandb_environment_switches_are_honoured(monkeypatch, env, spec, want):
    from shiftray.tracking import wandb_mode

    for k in ("WANDB_MODE", "WANDB_DISABLED"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert wandb_mode(spec) == want


def test_wandb_mode_disabled_writes_no_wandb_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    path = tmp_path / "job.yaml"
    spec = synthetic_spec(name="nw", train__steps=5, tracking={"wandb": "offline"})
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), f"tracking.output_dir={tmp_path}", "--no-ray", "--quiet"]) == 0
    assert (tmp_path / "nw" / "result.json").is_file() and not (tmp_path / "nw" / "wandb").exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("shiftray 0.")


@pytest.mark.parametrize("kind", ["table", "imagefolder", "text"])
def test_init_writes_a_spec_that_validates_and_trains(kind, tmp_path, capsys):
    """What `shiftray init` writes for each kind of own data runs (a few steps, small inputs;
    the text case swaps the encoder for a tiny local BERT and names the CSV's columns)."""
    from conftest import make_text_dir, make_tree

    over = []
    if kind == "table":
        path = tmp_path / "t.csv"
        assert main(["data", "example", "table", "--out", str(path)]) == 0
        pair = ["--source", "lab", "--target", "field"]
    elif kind == "imagefolder":
        make_tree(tmp_path / "imgs")
        path = tmp_path / "imgs"
        pair = ["--source", "photo", "--target", "night"]
        over = ["data.options.image_size=32"]
    else:
        make_text_dir(tmp_path)
        path = tmp_path / "reviews.csv"
        pair = ["--source", "a", "--target", "b", "--text", "review", "--label", "rating",
                "--domain", "condition"]  # fmt: skip
        over = [f"model.backbone=hf/{tmp_path / 'bert'}"]
    job = tmp_path / "job.yaml"
    args = ["init", "--data", kind, "--path", str(path), *pair, "--method", "dann"]
    assert main([*args, "--out", str(job)]) == 0
    assert main([*args, "--out", str(job)]) == 2  # never overwritten silently
    text = job.read_text()
    assert text.startswith("# dann on your own data") and "# the adaptation method" in text
    assert main(["validate", str(job)]) == 0
    short = ["train.steps=4", "train.batch_size=8", "train.eval_every=4", "train.checkpoint_every=4",
             "tracking.wandb=disabled", f"tracking.output_dir={tmp_path}/runs"]  # fmt: skip
    assert main(["run", str(job), *over, *short, "--no-ray", "--quiet"]) == 0, capsys.readouterr()
    assert "target_acc" in capsys.readouterr().out


def test_shipped_jobs_are_listed_copied_and_in_the_wheel(tmp_path, capsys):
    """A pip user reaches the shipped specs: `shiftray jobs` lists them, `jobs copy` copies
    them to edit, and the wheel carries every one (under <prefix>/share/shiftray/jobs)."""
    import subprocess
    import sys
    import zipfile

    shipped = sorted(ROOT.glob("jobs/*/*.yaml"))
    assert main(["jobs"]) == 0
    out = capsys.readouterr().out
    assert f"{len(shipped)} job specs" in out and "amazon/dann " in out
    assert main(["jobs", "copy", "amazon/dann", "--to", str(tmp_path / "mine")]) == 0
    assert (tmp_path / "mine/amazon/dann.yaml").read_text() == (
        ROOT / "jobs/amazon/dann.yaml"
    ).read_text()
    assert (
        main(["jobs", "copy", "amazon/dann", "--to", str(tmp_path / "mine")]) == 2
    )  # no overwrite
    assert main(["jobs", "copy", "amazon/nope", "--to", str(tmp_path / "mine")]) == 2
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheel_dir)], check=True, capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = wheel_dir.glob("shiftray-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    carried = sorted(
        n.split("share/shiftray/jobs/")[1] for n in names if "share/shiftray/jobs/" in n
    )
    assert carried == [str(p.relative_to(ROOT / "jobs")) for p in shipped]
