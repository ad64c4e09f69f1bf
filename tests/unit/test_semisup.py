"""Semi-supervised DA: k labelled target rows per class, drawn by seed, train as a third stream;
evaluation never scores them and no other target training label reaches training."""

import json

import numpy as np
import pytest
from conftest import synthetic_spec
from shiftray.config.load import spec_from_dict
from shiftray.data.arrays import DomainArrays
from shiftray.data.loading import excluding, few_labelled, load_job_data
from shiftray.train.loop import train_loop_per_worker
from shiftray.train.run import LoopConfig

HARD = {"n": 256, "dim": 8, "angle": 60, "shift": 2.0}  # source-only reaches ~68% on b


def test_k_per_class_by_seed_and_the_rest_unlabelled():
    y = np.repeat(np.arange(3), 20)
    arrays = DomainArrays(np.arange(60, dtype=np.float32)[:, None], y, "b", "train")
    few, rest = few_labelled(arrays, 2, seed=0)
    assert np.bincount(few.y).tolist() == [2, 2, 2] and len(rest) == 54
    assert not set(few.x[:, 0]) & set(rest.x[:, 0])  # a labelled row is not also unlabelled
    assert (few.y == few.x[:, 0] // 20).all()  # each row keeps its own label
    again, _ = few_labelled(arrays, 2, seed=0)
    other, _ = few_labelled(arrays, 2, seed=1)
    assert (again.x == few.x).all() and (other.x != few.x).any()
    # a benchmark that tests on its training rows (a domain used whole): labelled rows leave it
    test = excluding(arrays, few)
    assert len(test) == 54 and not set(few.x[:, 0]) & set(test.x[:, 0])


def test_job_data_holds_no_other_target_training_label():
    spec = spec_from_dict(synthetic_spec(data={"benchmark": "synthetic", "source": "a", "target": "b",
                                               "options": HARD, "target_labels_per_class": 4}))  # fmt: skip
    data = load_job_data(spec)
    assert not hasattr(data.target, "y")  # the unlabelled stream has no labels at all
    assert len(data.target_labelled) == 12 and len(data.target) == 256 - 12
    assert np.bincount(data.target_labelled.y).tolist() == [4, 4, 4]


def test_labelled_target_rows_train_and_help(tmp_path):
    accs = {}
    for k in (0, 10):
        spec = spec_from_dict(synthetic_spec(
            name=f"k{k}", method={"name": "erm"}, train__steps=100,
            data={"benchmark": "synthetic", "source": "a", "target": "b", "options": HARD,
                  "target_labels_per_class": k, "target_label_weight": {"start": 1.0, "end": 1.0}},
        ))  # fmt: skip
        result = train_loop_per_worker(LoopConfig(spec, tmp_path / spec.name, load_job_data(spec)))
        accs[k] = result["target_acc"]
        logs = [
            json.loads(x) for x in (tmp_path / spec.name / "metrics.jsonl").read_text().splitlines()
        ]
        assert any("target_label_loss" in r for r in logs) == (k > 0)
        assert result["eval_count"] == 256  # synthetic: no test row equals a training row
    assert accs[10] > accs[0] + 5.0, accs


def test_streamed_jobs_refuse_target_labels():
    with pytest.raises(ValueError, match="in-memory"):
        spec_from_dict(synthetic_spec(data={"benchmark": "parquet", "source": "a", "target": "b",
                                            "options": {"path": "/nowhere"}, "stream": {"enabled": True},
                                            "target_labels_per_class": 1}))  # fmt: skip


def test_the_labelled_batch_trains_but_stays_out_of_batchnorm_statistics():
    """A labelled batch drawn from a few rows gets its loss and gradient, and leaves the running
    statistics evaluation normalises with where the method's own forward pass put them."""
    import torch
    from shiftray.config.schema import LabelWeight
    from shiftray.data.batches.base import DABatch
    from shiftray.methods.base import ModelInfo
    from shiftray.models.build import build_model
    from shiftray.registry import METHODS
    from shiftray.train.module import TrainModule

    spec = spec_from_dict(synthetic_spec(method={"name": "erm"}))
    torch.manual_seed(0)
    model = build_model(spec.model, (8,), 3)
    method = METHODS.get("erm")(spec.method.resolved_params(), ModelInfo(model.feature_dim, 3))
    module = TrainModule(model, method)
    norm = model.bottleneck[1]
    assert isinstance(norm, torch.nn.BatchNorm1d)
    x_s, x_t = torch.randn(32, 8), torch.randn(32, 8)
    few = 5.0 + torch.randn(3, 8)  # 3 rows far from both domains, drawn with replacement
    batch = DABatch(x_s, torch.randint(0, 3, (32,)), x_t, x_l=few[torch.randint(0, 3, (32,))],
                    y_l=torch.randint(0, 3, (32,)))  # fmt: skip
    module.train()
    module(DABatch(x_s, batch.y_s, x_t), 0.5)  # the method's pass alone
    want = norm.running_mean.clone(), norm.running_var.clone()
    norm.reset_running_stats()
    module.target_label_weight = LabelWeight()
    out = module(batch, 0.5)
    assert "target_label_loss" in out.logs
    assert torch.equal(norm.running_mean, want[0]) and torch.equal(norm.running_var, want[1])
    out.loss.backward()
    assert all(p.grad.abs().sum() > 0 for p in model.head.parameters())
