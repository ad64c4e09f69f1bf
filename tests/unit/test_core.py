"""Core v2 contracts: frozen groups, early stopping's best model, checked source runs, a plain
run without test instrumentation, the target typed without labels."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import ROOT, synthetic_spec
from safetensors.torch import load_file
from shiftray.config.load import spec_from_dict
from shiftray.data.loading import load_job_data
from shiftray.models.load import load_trained_model, resolve_checkpoint
from shiftray.train.hooks import ParamDigests
from shiftray.train.loop import train_loop_per_worker
from shiftray.train.run import LoopConfig

UNFREEZE = {
    "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": [32, 32]}, "bottleneck_dim": 16},
    "finetune": {"strategy": "gradual-unfreeze", "stages": [
        {"until": 0.5, "groups": 0}, {"until": 1.0, "groups": "all"}]},
    "optim": {"name": "adam", "lr": 0.01, "schedule": "constant"},
    "train__steps": 40, "train__checkpoint_every": 10, "train__keep_checkpoints": 10,
}  # fmt: skip


def run(tmp_path, name, hooks=(), **over):
    spec = spec_from_dict(synthetic_spec(name=name, **over))
    run_dir = tmp_path / name
    data = load_job_data(spec)
    return run_dir, train_loop_per_worker(LoopConfig(spec, run_dir, data, hooks=tuple(hooks)))


def _backbone_state(ckpt):
    """The backbone's weights and the optimizer state held for the backbone groups."""
    weights = {k: v for k, v in load_file(ckpt / "model.safetensors").items() if "backbone" in k}
    opt = torch.load(ckpt / "optimizer.pt", weights_only=True)
    ids = [i for g in opt["param_groups"] if g["name"].startswith("backbone.") for i in g["params"]]
    return weights, [i for i in ids if i in opt["state"]]


def test_frozen_groups_get_no_gradient_and_no_optimizer_state(tmp_path):
    """Gradual unfreezing, Adam: until the backbone's stage (progress 0.5 = step 20) its weights
    are the initial ones and the optimizer holds no moments for them (nothing piles up to kick
    at unfreeze); after it, both exist. A run resumed at step 10 ends bit-identical."""
    from shiftray.models.build import build_model

    run_dir, _ = run(tmp_path, "full", hooks=(ParamDigests(),), **UNFREEZE)
    spec = spec_from_dict(synthetic_spec(**UNFREEZE))
    torch.manual_seed(spec.train.seed)
    init = build_model(spec.model, (8,), 3).state_dict()
    for step in (10, 20):
        weights, with_state = _backbone_state(run_dir / f"checkpoint_{step:08d}")
        assert all(torch.equal(v, init[k]) for k, v in weights.items())
        assert with_state == []
    weights, with_state = _backbone_state(run_dir / "checkpoint_00000030")
    assert not torch.equal(weights["backbone.1.weight"], init["backbone.1.weight"])
    assert len(with_state) == 4  # two Linear layers: weights and biases
    part_dir = tmp_path / "part"
    shutil.copytree(run_dir, part_dir)
    for step in (20, 30, 40):
        shutil.rmtree(part_dir / f"checkpoint_{step:08d}")
    (part_dir / "result.json").unlink()
    _, resumed = run(tmp_path, "part", hooks=(ParamDigests(),), **UNFREEZE)
    assert resumed["resumed_from"] == 10
    assert (part_dir / "params_rank0.json").read_text() == (
        run_dir / "params_rank0.json"
    ).read_text()


def test_apply_freezing_skips_gradients_of_frozen_groups():
    from shiftray.data.batches.base import DABatch
    from shiftray.finetune.freeze import apply_freezing
    from shiftray.methods.base import ModelInfo
    from shiftray.models.build import build_model
    from shiftray.registry import METHODS
    from shiftray.train.module import TrainModule
    from shiftray.train.optim import build_optimizer, set_lr
    from shiftray.train.step import train_step

    spec = spec_from_dict(synthetic_spec(**UNFREEZE))
    model = build_model(spec.model, (8,), 3)
    method = METHODS.get("dann")(spec.method.resolved_params(), ModelInfo(16, 3))
    module = TrainModule(model, method)
    opt = build_optimizer(module, spec)
    set_lr(opt, spec, 0.1)
    assert apply_freezing(opt) is True and apply_freezing(opt) is False  # changed once
    batch = DABatch(torch.randn(8, 8), torch.randint(0, 3, (8,)), torch.randn(8, 8))
    train_step(module, opt, batch, 0.1)
    frozen = [p for g in opt.param_groups if g["name"].startswith("backbone.") for p in g["params"]]
    assert frozen and all(p.grad is None and p not in opt.state for p in frozen)
    assert all(p.grad is not None for p in model.head.parameters())
    set_lr(opt, spec, 0.6)
    assert apply_freezing(opt) is True and all(p.requires_grad for p in frozen)


def test_early_stopping_restores_the_best_step(tmp_path):
    """min_delta 50: no evaluation after the first one counts as better, so the best step is 10
    and patience 2 stops the run at 30; the final model is step 10's (kept although
    keep_checkpoints is 1), and the run directory resolves to it."""
    es = {"metric": "source_val_acc", "patience": 2, "min_delta": 50.0}
    over = dict(data__source_val_fraction=0.2, finetune={"early_stopping": es},
                train__steps=100, train__eval_every=10, train__checkpoint_every=50,
                train__keep_checkpoints=1)  # fmt: skip
    run_dir, result = run(tmp_path, "best", **over)
    assert result["stopped_early"] and result["step"] == 30 and result["best_step"] == 10
    assert result["model_step"] == 10
    best = json.loads((run_dir / "checkpoint_00000010" / "state.json").read_text())
    assert result["target_acc"] == best["metrics"]["target_acc"]
    assert resolve_checkpoint(run_dir).name == "checkpoint_00000010"
    model, _ = load_trained_model(run_dir)
    spec = spec_from_dict(synthetic_spec(**over))
    test = load_job_data(spec).target_test
    with torch.no_grad():
        acc = (model(torch.from_numpy(test.x))[0].argmax(1).numpy() == test.y).mean() * 100
    assert acc == pytest.approx(result["target_acc"])
    es["restore_best"] = False
    _, last = run(tmp_path, "last", **over)
    assert last["model_step"] == 30 and last["best_step"] == 10


def test_per_class_accuracy_in_the_result(tmp_path):
    _, result = run(tmp_path, "pc", train__steps=20)
    per_class = result["target_per_class"]
    assert list(per_class) == ["c0", "c1", "c2"]
    test = load_job_data(spec_from_dict(synthetic_spec())).target_test
    counts = np.bincount(test.y, minlength=3)
    overall = sum(per_class[f"c{k}"] * counts[k] for k in range(3)) / counts.sum()
    assert overall == pytest.approx(result["target_acc"])


def test_a_plain_run_writes_no_test_instrumentation(tmp_path):
    run_dir, _ = run(tmp_path, "plain", train__steps=20)
    assert (run_dir / "result.json").is_file()
    assert not list(run_dir.glob("params_rank*.json")) and not list(run_dir.glob("node_rank*"))


def test_shot_refuses_a_source_model_of_other_domains_or_backbone(tmp_path):
    src_dir, _ = run(tmp_path, "src", method={"name": "erm"}, train__steps=10)
    shot = {"name": "shot", "params": {"source_checkpoint": str(src_dir)}}
    with pytest.raises(ValueError) as err:  # trained on a, this job's source is b
        run(tmp_path, "swapped", method=shot, data__source="b", data__target="a")
    msg = str(err.value)
    assert "source='a'" in msg and "source='b'" in msg and "method.params.source_checkpoint" in msg
    image = {"n": 256, "dim": 256, "image": True}  # 16 x 16: big enough for LeNet
    src2, _ = run(tmp_path, "src2", method={"name": "erm"}, train__steps=10, data__options=image)
    lenet_shot = {**shot, "params": {"source_checkpoint": str(src2)}}
    with pytest.raises(ValueError, match="backbone='mlp'.*backbone='lenet'"):
        run(tmp_path, "lenet", method=lenet_shot, model={"backbone": "lenet", "bottleneck_dim": 16},
            data__options=image)  # fmt: skip
    _, ok = run(tmp_path, "shot", method=shot, train__steps=10)
    assert ok["step"] == 10


def test_distillation_refuses_a_teacher_of_other_classes(tmp_path):
    teacher, _ = run(tmp_path, "teacher", method={"name": "erm"}, train__steps=10,
                     data__options={"n": 256, "dim": 8, "num_classes": 4})  # fmt: skip
    with pytest.raises(ValueError) as err:
        run(tmp_path, "student", method={"name": "distill", "params": {"teacher": str(teacher)}})
    msg = str(err.value)
    assert "classes=('c0', 'c1', 'c2', 'c3')" in msg and "classes=('c0', 'c1', 'c2')" in msg


class LabelTrap(np.ndarray):
    """Target labels that fail the test when anything reads them."""

    def _fail(self, *args, **kwargs):
        raise AssertionError("a target training label was read")

    __getitem__ = __iter__ = __len__ = __array__ = tolist = _fail

    def __array_ufunc__(self, *args, **kwargs):
        self._fail()

    def __array_function__(self, *args, **kwargs):
        self._fail()


@pytest.mark.parametrize("method", ["self_training", "fixmatch", "shot"])
def test_in_memory_training_never_reads_a_target_label(tmp_path, monkeypatch, method):
    """The reader hands the target's training split over with trapped labels: training (with
    pseudo-labelling methods, SHOT's whole-target refresh included) runs to the end, and the
    data it trains on has no label slot for the target at all."""
    from shiftray.data.arrays import UnlabelledArrays
    from shiftray.data.readers.synthetic import Synthetic

    real = Synthetic.read.__func__

    def read(cls, domain, split, opts):
        arrays = real(cls, domain, split, opts)
        if (domain, split) == ("b", "train"):
            arrays.y = np.asarray(arrays.y).view(LabelTrap)
        return arrays

    monkeypatch.setattr(Synthetic, "read", classmethod(read))
    params = {}
    if method == "shot":
        src_dir, _ = run(tmp_path, "src", method={"name": "erm"}, train__steps=10)
        params = {"source_checkpoint": str(src_dir), "refresh_every": 5}
    spec = spec_from_dict(synthetic_spec(method={"name": method, "params": params}))
    data = load_job_data(spec)
    assert isinstance(data.target, UnlabelledArrays) and not hasattr(data.target, "y")
    result = train_loop_per_worker(LoopConfig(spec, tmp_path / method, data))
    assert result["step"] == 40 and result["eval_count"] == 256


def test_zscore_statistics_come_from_training_rows_and_travel_with_the_checkpoint(tmp_path):
    """data.normalize=zscore: mean and std over the source and target training rows (by hand
    here), no test row; saved in model.safetensors, so the loaded model standardises raw
    inputs itself."""
    from shiftray.data.loading import load_domain_data

    opts = {"n": 256, "dim": 8, "shift": 50.0}  # the target sits far off: its rows count
    run_dir, _ = run(tmp_path, "z", data__normalize="zscore", data__options=opts, train__steps=10)
    spec = spec_from_dict(synthetic_spec(data__options=opts))
    raw = load_domain_data(spec.data)
    rows = np.concatenate([raw.source.x, raw.target.x]).astype(np.float64)
    weights = load_file(run_dir / "checkpoint_00000010" / "model.safetensors")
    np.testing.assert_allclose(weights["norm_mean"].numpy(), rows.mean(0), rtol=1e-5)
    np.testing.assert_allclose(weights["norm_std"].numpy(), rows.std(0), rtol=1e-4)
    model, _ = load_trained_model(run_dir)
    x = torch.from_numpy(raw.target_test.x[:5])
    z = (x - weights["norm_mean"]) / weights["norm_std"]
    with torch.no_grad():
        assert torch.allclose(model.features(x), model.backbone(z), atol=1e-6)


def test_a_collapsed_run_is_flagged(tmp_path, capsys):
    """Inputs a millionth of their scale: the shipped learning rates cannot move the model off
    one class; the result says so and the run warns. z-scored, the same data learns."""
    tiny = {"n": 256, "dim": 8, "scale": 1e-6}
    over = dict(data__options=tiny, train__steps=40, optim={"lr": 0.01},
                model={"backbone": "mlp", "backbone_kwargs": {"hidden": [16], "activation": "sigmoid"},
                       "bottleneck_dim": 0})  # fmt: skip
    _, flat = run(tmp_path, "flat", **over)
    assert flat["health"]["collapsed"] and "collapsed" in capsys.readouterr().err
    _, z = run(tmp_path, "z", data__normalize="zscore", **over)
    assert not z["health"]["collapsed"] and z["target_acc"] > 60


def test_the_shipped_amazon_spec_collapses_on_tiny_features_unless_normalised(tmp_path, capsys):
    """The shipped Amazon DANN spec pointed at a table of L1-normalised features (values around
    0.0025): without data.normalize every review lands in one class and the run says so; with
    data.normalize=zscore the same spec learns."""
    from shiftray.config.load import load_spec
    from shiftray.data.example import example_table
    from shiftray.train.launch import fit_local

    table = example_table(tmp_path / "bow.csv")  # L1-normalised counts, ~1/400 a value
    common = ["data.benchmark=table", f"data.options={{path: {table}}}", "data.source=lab",
              "data.target=field", "train.steps=300", "train.eval_every=300",
              "train.checkpoint_every=300", "tracking.wandb=disabled",
              f"tracking.output_dir={tmp_path}"]  # fmt: skip
    job = ROOT / "jobs" / "amazon" / "dann.yaml"
    flat = fit_local(load_spec(job, [*common, "name=flat"])).metrics
    assert flat["health"]["collapsed"] and flat["target_acc"] == pytest.approx(50.0, abs=1.0)
    assert "collapsed" in capsys.readouterr().err
    z = fit_local(load_spec(job, [*common, "name=z", "data.normalize=zscore"])).metrics
    assert not any(z["health"].values()) and z["target_acc"] > 75.0


def _unfreeze_rank(rank, world, spec_json, run_dir, rdzv):
    import torch.distributed as dist
    from shiftray.config.schema import JobSpec

    dist.init_process_group("gloo", init_method=f"file://{rdzv}", rank=rank, world_size=world)
    try:
        spec = JobSpec.model_validate(spec_json)
        data = load_job_data(spec)
        train_loop_per_worker(LoopConfig(spec, run_dir, data, hooks=(ParamDigests(),)))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_ranks_rewrap_ddp_at_unfreeze_and_stay_in_sync(tmp_path):
    """Two gloo ranks (no Ray) through a gradual unfreeze: DDP is re-built when the backbone
    joins at progress 0.5, the gradients of the newly trainable groups are all-reduced (equal
    parameters on both ranks), and the backbone kept its initial weights before that."""
    import torch.multiprocessing as mp

    spec = spec_from_dict(synthetic_spec(resources={"num_workers": 2, "torch_threads": 1},
                                         **UNFREEZE))  # fmt: skip
    run_dir = tmp_path / "ddp"
    mp.start_processes(_unfreeze_rank, args=(2, spec.model_dump(mode="json"), run_dir,
                                             str(tmp_path / "rdzv")), nprocs=2, start_method="spawn")  # fmt: skip
    digests = [json.loads((run_dir / f"params_rank{r}.json").read_text()) for r in (0, 1)]
    assert digests[0] == digests[1]
    weights, with_state = _backbone_state(run_dir / "checkpoint_00000020")
    assert with_state == []
    weights, with_state = _backbone_state(run_dir / "checkpoint_00000040")
    assert len(with_state) == 4


def test_two_ranks_end_with_the_restored_best_model(tmp_path):
    """restore_best on two ranks: rank 0 loads the best step's weights and broadcasts them, so
    both ranks hold the same final model, the best one."""
    import torch.multiprocessing as mp

    es = {"metric": "source_val_acc", "patience": 2, "min_delta": 50.0}
    spec = spec_from_dict(synthetic_spec(
        resources={"num_workers": 2, "torch_threads": 1}, data__source_val_fraction=0.2,
        finetune={"early_stopping": es}, train__steps=100, train__eval_every=10,
        train__checkpoint_every=50))  # fmt: skip
    run_dir = tmp_path / "es"
    mp.start_processes(_unfreeze_rank, args=(2, spec.model_dump(mode="json"), run_dir,
                                             str(tmp_path / "rdzv")), nprocs=2, start_method="spawn")  # fmt: skip
    result = json.loads((run_dir / "result.json").read_text())
    assert result["model_step"] == result["best_step"] == 10 and result["step"] == 30
    digests = [json.loads((run_dir / f"params_rank{r}.json").read_text()) for r in (0, 1)]
    assert digests[0] == digests[1]
    from shiftray.train.hooks import param_digest

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = load_trained_model(run_dir / "checkpoint_00000010")[0]

    assert {k: v for k, v in digests[0].items() if k.startswith("model.")} == param_digest(Holder())


def test_user_errors_inside_ray_workers_come_out_as_themselves():
    """A worker's UserInputError (a SHOT source run for another domain) reaches the CLI as
    itself, not wrapped in Ray's WorkerGroupError (which would print a traceback)."""
    import ray.train
    from shiftray.errors import UserInputError
    from shiftray.train.launch import _user_error

    mine = UserInputError("method.params.source_checkpoint ... was trained with source='a'")
    wrapped = ray.train.WorkerGroupError("rank 0 failed", {0: mine, 1: RuntimeError("peer gone")})
    assert _user_error(wrapped) is mine
    assert _user_error(ray.train.WorkerGroupError("bug", {0: KeyError("x")})) is None


def test_inputs_that_do_not_fit_are_refused_before_training(tmp_path):
    from shiftray.config.load import SpecError
    from shiftray.errors import UserInputError

    with pytest.raises(SpecError, match="source-free"):  # SHOT never reads the source
        spec_from_dict(synthetic_spec(
            method={"name": "shot"}, data__source_val_fraction=0.2,
            finetune={"early_stopping": {"metric": "source_val_acc"}}))  # fmt: skip
    image = {"n": 64, "dim": 64, "image": True}
    with pytest.raises(UserInputError, match="data.normalize is for feature vectors"):
        load_job_data(spec_from_dict(synthetic_spec(data__options=image, data__normalize="zscore")))
    src_dir, _ = run(tmp_path, "src", method={"name": "erm"}, train__steps=10,
                     data__normalize="zscore")  # fmt: skip
    shot = {"name": "shot", "params": {"source_checkpoint": str(src_dir)}}
    with pytest.raises(UserInputError, match="normalize='zscore'.*normalize='none'"):
        run(tmp_path, "shot", method=shot)
