"""The training loop in-process (no Ray): learning, checkpoint format, exact resume."""

import json
import shutil

import numpy as np
import pytest
from conftest import synthetic_spec
from shiftray.config.load import load_spec, spec_from_dict
from shiftray.data.arrays import DomainArrays
from shiftray.data.loading import load_domain_data, load_job_data
from shiftray.train.checkpoint import latest_checkpoint, list_checkpoints
from shiftray.train.hooks import ParamDigests
from shiftray.train.loop import train_loop_per_worker
from shiftray.train.run import LoopConfig


def run(tmp_path, name, **over):
    spec = spec_from_dict(synthetic_spec(name=name, **over))
    run_dir = tmp_path / name
    run_dir.mkdir(exist_ok=True)
    data = load_job_data(spec)
    result = train_loop_per_worker(LoopConfig(spec, run_dir, data, hooks=(ParamDigests(),)))
    return run_dir, result


PARAMS = {
    "erm": {},
    "dann": {"disc_hidden": [16]},
    "cdan": {"disc_hidden": [16], "entropy": True},
    "mcc": {},
    "self_training": {},
    "fixmatch": {"threshold": 0.8},
    "mean_teacher": {},
}


@pytest.mark.parametrize("method", list(PARAMS))
def test_loop_learns_and_writes_run_dir(tmp_path, method):
    over = {"method": {"name": method, "params": PARAMS[method]}}
    run_dir, result = run(tmp_path, method, train__steps=60, **over)
    assert result["target_acc"] > 50.0  # 3 classes: chance is ~33
    assert result["eval_count"] == 256
    ckpt = latest_checkpoint(run_dir)
    assert ckpt.name == "checkpoint_00000060"
    names = {p.name for p in ckpt.iterdir()}
    assert {
        "model.safetensors",
        "method.safetensors",
        "optimizer.pt",
        "state.json",
        "spec.yaml",
        "labels.json",
    } <= names
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 60 and state["progress"] == 1.0
    assert load_spec(ckpt / "spec.yaml").method.name == method
    assert json.loads((ckpt / "labels.json").read_text())["classes"] == ["c0", "c1", "c2"]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "target_acc" in r] == [20, 40, 60]
    assert len(list_checkpoints(run_dir)) == 2  # keep_checkpoints=2 pruned the oldest


HARD = {"n": 256, "dim": 8, "angle": 60, "shift": 2.0}  # source-only reaches ~68% on b


def source_run(tmp_path, **over):
    run_dir, _ = run(
        tmp_path,
        "source",
        method={"name": "erm", "params": {"label_smoothing": 0.1}},
        train__steps=60,
        **over,
    )
    return run_dir


@pytest.mark.parametrize("method", ["dann", "mean_teacher", "shot"])
def test_resume_reproduces_uninterrupted_run(tmp_path, method):
    """Stopped after the step-20 checkpoint and resumed: identical to the uninterrupted run
    (the EMA teacher and SHOT's pseudo-labels, refreshed every 15 steps, included)."""
    params = {"dann": {"disc_hidden": [16]}, "mean_teacher": {}}.get(method)
    if method == "shot":
        params = {"source_checkpoint": str(source_run(tmp_path)), "refresh_every": 15}
    over = {"method": {"name": method, "params": params}}
    full_dir, full = run(tmp_path, "full", **over)
    part_dir, _ = run(tmp_path, "part", **over)
    shutil.rmtree(part_dir / "checkpoint_00000040")  # as if stopped after the step-20 checkpoint
    (part_dir / "result.json").unlink()
    resumed_dir, resumed = run(tmp_path, "part", **over)
    assert resumed["resumed_from"] == 20
    assert resumed["target_acc"] == full["target_acc"]
    assert resumed["target_loss"] == pytest.approx(full["target_loss"], abs=1e-9)
    assert (full_dir / "params_rank0.json").read_text() == (
        part_dir / "params_rank0.json"
    ).read_text()
    steps = [json.loads(x)["step"] for x in (part_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # no duplicated records after the resume


def test_partial_checkpoint_is_never_loaded(tmp_path):
    run_dir, _ = run(tmp_path, "p", train__steps=20)
    (run_dir / ".tmp-checkpoint_00000040-deadbeef").mkdir()  # a write killed half-way
    (run_dir / ".tmp-checkpoint_00000040-deadbeef" / "model.safetensors").write_bytes(b"junk")
    assert latest_checkpoint(run_dir).name == "checkpoint_00000020"


class Untouchable(np.ndarray):
    """Source inputs that fail the test if anything reads them."""

    def __getitem__(self, item):
        raise AssertionError("source data was read during source-free adaptation")


def test_shot_is_source_free_and_adapts(tmp_path):
    """On a shift the source model survives poorly (rotated 60 degrees and moved 2 along every
    axis: ~68% source-only), SHOT, reading no source example, recovers most of it (~100%)."""
    src_dir = source_run(tmp_path, data__options=HARD)
    spec = spec_from_dict(
        synthetic_spec(
            name="shot",
            method={"name": "shot", "params": {"source_checkpoint": str(src_dir)}},
            train__steps=60,
            data__options=HARD,
        )
    )
    data = load_job_data(spec)
    assert data.source is None  # the source files are not even opened
    full = load_domain_data(spec.data)
    data.source = DomainArrays(full.source.x.view(Untouchable), full.source.y, "a")
    run_dir = tmp_path / "shot"
    run_dir.mkdir()
    result = train_loop_per_worker(LoopConfig(spec, run_dir, data))
    source_only = json.loads((src_dir / "result.json").read_text())["target_acc"]
    assert source_only < 80.0 and result["target_acc"] > source_only + 15.0


def test_feature_extraction_caches_and_keeps_backbone(tmp_path):
    from safetensors.torch import load_file
    from shiftray.models.load import load_trained_model

    over = {
        "finetune": {"strategy": "feature-extraction"},
        "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": [32]}, "bottleneck_dim": 16},
    }
    run_dir, result = run(tmp_path, "fe", train__steps=40, **over)
    first = load_file(latest_checkpoint(run_dir) / "model.safetensors")
    spec = spec_from_dict(synthetic_spec(name="fe", **over))
    import torch

    torch.manual_seed(spec.train.seed)
    from shiftray.models.build import build_model

    init = build_model(spec.model, (8,), 3).state_dict()
    assert torch.equal(first["backbone.1.weight"], init["backbone.1.weight"])  # frozen
    assert not torch.equal(first["head.0.weight"], init["head.0.weight"])  # trained
    # the saved model is whole: rebuilt from the checkpoint it gives the reported accuracy
    model, _ = load_trained_model(run_dir)
    test = load_domain_data(spec.data).target_test
    acc = (model(torch.from_numpy(test.x))[0].argmax(1).numpy() == test.y).mean() * 100
    assert acc == pytest.approx(result["target_acc"])


def test_gradual_unfreeze_resumes_mid_stage_exactly(tmp_path):
    over = {
        "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": [32, 32]}, "bottleneck_dim": 16},
        "finetune": {"strategy": "gradual-unfreeze", "stages": [
            {"until": 0.25, "groups": 0}, {"until": 0.75, "groups": 1, "lr_scale": 0.5}, {"until": 1.0, "groups": "all"}]},
    }  # fmt: skip
    full_dir, full = run(tmp_path, "full", **over)
    part_dir, _ = run(tmp_path, "part", **over)
    state = json.loads((part_dir / "checkpoint_00000020" / "state.json").read_text())
    assert state["extra"]["unfreeze_stage"] == 1  # step 20 of 40 is mid-way through stage 1
    shutil.rmtree(part_dir / "checkpoint_00000040")
    _, resumed = run(tmp_path, "part", **over)
    assert resumed["resumed_from"] == 20
    assert resumed["target_acc"] == full["target_acc"]
    assert (full_dir / "params_rank0.json").read_text() == (
        part_dir / "params_rank0.json"
    ).read_text()


def test_early_stopping_on_source_validation(tmp_path):
    over = {
        "data": {"benchmark": "synthetic", "source": "a", "target": "b", "options": {"n": 256, "dim": 8}, "source_val_fraction": 0.2},
        "finetune": {"early_stopping": {"metric": "source_val_acc", "patience": 1, "min_delta": 50.0}},
    }  # fmt: skip
    run_dir, result = run(
        tmp_path,
        "es",
        train__steps=200,
        train__eval_every=10,
        train__label_free_scores=True,
        **over,
    )
    assert result["stopped_early"] and result["step"] < 200
    assert "source_val_acc" in result and "target_im" in result
    assert latest_checkpoint(run_dir).name == f"checkpoint_{result['step']:08d}"
    # run again (or restarted by Ray after the stop's checkpoint): it stays stopped there
    (run_dir / "result.json").unlink()
    _, again = run(tmp_path, "es", train__steps=200, train__eval_every=10,
                   train__label_free_scores=True, **over)  # fmt: skip
    assert again["stopped_early"] and again["step"] == again["resumed_from"] == result["step"]
    assert latest_checkpoint(run_dir).name == f"checkpoint_{result['step']:08d}"


def test_label_free_scores_by_hand():
    import torch
    from shiftray.config.schema import ModelSpec
    from shiftray.evaluate.validators import EarlyStopper, unsupervised_scores
    from shiftray.models.build import build_model

    torch.manual_seed(0)
    model = build_model(
        ModelSpec(backbone="mlp", backbone_kwargs={"hidden": [4]}, bottleneck_dim=0), (3,), 3
    ).eval()
    x = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    got = unsupervised_scores(model, DomainArrays(x, None), 4, torch.device("cpu"))
    p = torch.softmax(model(torch.from_numpy(x))[0], 1).double()
    ent = float(-(p * torch.log(p)).sum(1).mean())
    pb = p.mean(0)
    assert got["target_entropy"] == pytest.approx(ent, abs=1e-6)
    assert got["target_im"] == pytest.approx(float(-(pb * torch.log(pb)).sum()) - ent, abs=1e-6)
    stop = EarlyStopper("target_entropy", patience=2)
    assert [stop.update(v, s) for s, v in enumerate([1.0, 0.5, 0.6, 0.7])] == [
        False,
        False,
        False,
        True,
    ]
    assert stop.best == 0.5 and stop.best_step == 1


def test_resuming_with_another_spec_warns_with_the_changes(tmp_path, capsys):
    run(tmp_path, "grow", train__steps=20)
    capsys.readouterr()
    _, result = run(tmp_path, "grow", train__steps=40, optim__lr=0.1, train__eval_every=40)
    assert result["resumed_from"] == 20
    err = capsys.readouterr().err
    assert "trained with another spec" in err
    assert "train.steps: 20 -> 40" in err and "optim.lr: 0.05 -> 0.1" in err
    assert "eval_every" not in err  # bookkeeping fields change nothing the run computes
    es = {"early_stopping": {"metric": "target_entropy", "patience": 50}}
    run(tmp_path, "es", train__steps=20, finetune=es)
    capsys.readouterr()
    run(tmp_path, "es", train__steps=40, train__eval_every=10, finetune=es)
    assert "train.eval_every: 20 -> 10" in capsys.readouterr().err  # patience counts evals
    run(tmp_path, "same", train__steps=20)
    run(tmp_path, "same", train__steps=20, tracking={"wandb": "disabled", "project": "x"})
    assert "another spec" not in capsys.readouterr().err


def test_evaluation_runs_under_the_training_autocast():
    import torch
    from shiftray.data.arrays import DomainData
    from shiftray.evaluate.evaluation import evaluate_all

    seen = []

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 3)

        def forward(self, x):
            out = self.lin(x)
            seen.append(out.dtype)
            return out, x

    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 200)
    data = DomainData(None, DomainArrays(x, None), DomainArrays(x, y), ["a", "b", "c"], (8,))
    cpu, model = torch.device("cpu"), Model()
    fp32 = evaluate_all(model, data, 64, cpu, label_free=True).metrics
    assert set(seen) == {torch.float32}
    seen.clear()
    bf16 = evaluate_all(model, data, 64, cpu, label_free=True, autocast_dtype=torch.bfloat16)
    bf16 = bf16.metrics
    assert set(seen) == {torch.bfloat16}
    assert bf16["eval_count"] == 200 and abs(bf16["target_acc"] - fp32["target_acc"]) <= 2.0
    assert bf16["target_loss"] == pytest.approx(fp32["target_loss"], rel=0.02)
    assert bf16["target_entropy"] == pytest.approx(fp32["target_entropy"], rel=0.02)


def test_resume_keeps_the_logged_means_and_takes_the_new_optimizer_settings(tmp_path):
    """A checkpoint between two logs (every 15 vs every 10 steps) keeps the running means, so
    the resumed run logs the losses the uninterrupted one did. Optimizer settings changed for
    the resume (momentum, layer-wise scales) are the new spec's; the state is the checkpoint's."""
    from shiftray.train.checkpoint import load_checkpoint

    over = dict(train__steps=40, train__checkpoint_every=15, train__log_every=10,
                train__keep_checkpoints=5)  # fmt: skip
    full_dir, full = run(tmp_path, "full", **over)
    part_dir, _ = run(tmp_path, "part", **over)
    for step in (30, 40):
        shutil.rmtree(part_dir / f"checkpoint_{step:08d}")
    (part_dir / "result.json").unlink()
    _, resumed = run(tmp_path, "part", **over)
    assert resumed["resumed_from"] == 15

    def losses(d):
        rows = map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
        return {r["step"]: r["loss"] for r in rows if "loss" in r}

    assert losses(part_dir) == pytest.approx(losses(full_dir), abs=1e-9)
    assert sorted(losses(part_dir)) == [10, 20, 30, 40]

    import torch
    from shiftray.methods.base import ModelInfo
    from shiftray.models.build import build_model
    from shiftray.registry import METHODS
    from shiftray.train.module import TrainModule
    from shiftray.train.optim import build_optimizer

    spec = spec_from_dict(synthetic_spec(name="part", finetune={"backbone_lr_scale": 0.1},
                                         optim={"lr": 0.05, "momentum": 0.5}))  # fmt: skip
    data = load_job_data(spec)
    model = build_model(spec.model, data.input_shape, data.num_classes)
    method = METHODS.get(spec.method.name)(
        spec.method.resolved_params(), ModelInfo(model.feature_dim, data.num_classes)
    )
    module = TrainModule(model, method)
    opt = build_optimizer(module, spec)
    want = [(g["name"], g["lr_scale"], g["momentum"]) for g in opt.param_groups]
    load_checkpoint(latest_checkpoint(part_dir), module, opt)
    assert [(g["name"], g["lr_scale"], g["momentum"]) for g in opt.param_groups] == want
    assert any(g["lr_scale"] == 0.1 for g in opt.param_groups)
    state = opt.state[opt.param_groups[0]["params"][0]]
    assert torch.count_nonzero(state["momentum_buffer"]) > 0  # the checkpoint's


def test_restart_deletes_this_nodes_old_checkpoints_before_any_is_registered(tmp_path):
    """`--restart` on a cluster: the driver deletes its run directory, but a worker on another
    node still holds the old run's checkpoints there; with ``fresh`` it starts from step 0."""
    run_dir, _ = run(tmp_path, "f", train__steps=20)
    (run_dir / "result.json").unlink()
    spec = spec_from_dict(synthetic_spec(name="f", train__steps=40))
    result = train_loop_per_worker(LoopConfig(spec, run_dir, load_job_data(spec), fresh=True))
    assert result["resumed_from"] == 0 and result["step"] == 40


def test_a_rank_without_unlabelled_rows_still_scores_and_reduces(monkeypatch):
    """Two ranks, one unlabelled row: rank 1 has none. Its zeros join rank 0's sums in the
    all-reduce, so both ranks report the scores of the whole set (no 0/0, no hang)."""
    import torch
    import torch.distributed as dist
    from shiftray.config.schema import ModelSpec
    from shiftray.evaluate.validators import running as validators
    from shiftray.models.build import build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="mlp", bottleneck_dim=0), (3,), 4)
    x = np.random.default_rng(0).normal(size=(1, 3)).astype(np.float32)
    data, cpu = DomainArrays(x, None), torch.device("cpu")
    whole = validators.unsupervised_scores(model, data, 4, cpu)
    sent = {}

    def all_reduce_as(rank):
        def reduce(t, op=dist.ReduceOp.SUM):
            sent[rank] = t.clone()
            if len(sent) == 2:  # both ranks have contributed: the sum, as gloo would
                t.copy_(sent[0] + sent[1])

        return reduce

    monkeypatch.setattr(validators.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(validators.dist, "all_reduce", all_reduce_as(0))
    validators.unsupervised_scores(model, data, 4, cpu, rank=0, world=2)  # sends its sums
    monkeypatch.setattr(validators.dist, "all_reduce", all_reduce_as(1))
    got = validators.unsupervised_scores(model, data, 4, cpu, rank=1, world=2)
    assert torch.count_nonzero(sent[1]) == 0 and sent[1].shape == sent[0].shape == (2 + 4,)
    assert got == pytest.approx(whole)  # rank 1, which holds no row, reports the whole set's
