"""Multi-task learning: two tasks on one backbone, each with its head, loss and metric."""

import csv
import json

import numpy as np
import pytest
import torch
from conftest import synthetic_spec
from shiftray.config.load import spec_from_dict
from shiftray.data.loading import load_job_data
from shiftray.models.load import load_trained_model
from shiftray.train.loop import train_loop_per_worker
from shiftray.train.run import LoopConfig


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """8 features; 'kind' (3 classes) from the first 4, 'size' (2 classes) from the last 4;
    domain b shifted. A few rows have no 'size' label (empty)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("mt") / "rows.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"f{i}" for i in range(8)] + ["kind", "size", "domain"])
        for dom, shift in (("a", 0.0), ("b", 0.7)):
            for i in range(240):
                kind, size = i % 3, (i // 3) % 2
                x = rng.normal(0, 0.5, 8) + shift
                x[kind] += 2.5
                x[4:] += 1.5 * size
                w.writerow(
                    [
                        *np.round(x, 4),
                        f"k{kind}",
                        "" if i % 40 == 0 else ("small", "big")[size],
                        dom,
                    ]
                )
    return path


def mt_spec(path, name="mt", weighting="fixed", **over):
    return spec_from_dict(synthetic_spec(**{
        "name": name,
        "data": {"benchmark": "table", "source": "a", "target": "b",
                 "options": {"path": str(path), "label": "kind", "domain": "domain",
                             "feature_columns": [f"f{i}" for i in range(8)]}},
        "tasks": [{"name": "kind"}, {"name": "size", "label": "size", "weight": 0.5}],
        "task_weighting": weighting, "train__steps": 80, **over,
    }))  # fmt: skip


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty"])
def test_two_tasks_train_on_one_backbone_and_report_both(tmp_path, table, weighting):
    spec = mt_spec(table, weighting=weighting)
    data = load_job_data(spec)
    assert data.task_classes == {"size": ["big", "small"]}
    assert (data.source.tasks["size"] == -1).sum() == 6  # empty cells: no label, no loss
    result = train_loop_per_worker(LoopConfig(spec, tmp_path / "run", data))
    assert result["target_acc"] > 80.0 and result["task/size/target_acc"] > 80.0
    logs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("task/size/loss" in r for r in logs)
    model, labels = load_trained_model(tmp_path / "run")  # the checkpoint holds both heads
    assert labels["tasks"] == {"size": ["big", "small"]} and set(model.task_heads) == {"size"}
    if weighting == "uncertainty":  # the learned log-variance moved from its start at 0
        assert (
            model.task_log_vars is not None
            and float(model.task_log_vars.detach().abs().max()) > 1e-3
        )
    x = torch.from_numpy(data.target_test.x[:4])
    assert model(x)[0].shape == (4, 3)  # the primary head, as serving sees it


def test_a_numeric_task_column_is_never_an_input(tmp_path, table):
    """Without feature_columns every numeric column is a feature, but not a task's labels."""
    import pandas as pd

    rows = pd.read_csv(table)
    rows["size"] = rows["size"].map({"small": 0, "big": 1})  # numeric labels now (NaN: none)
    rows.to_csv(tmp_path / "numeric.csv", index=False)
    spec = mt_spec(tmp_path / "numeric.csv", data={
        "benchmark": "table", "source": "a", "target": "b",
        "options": {"path": str(tmp_path / "numeric.csv"), "label": "kind", "domain": "domain"}})  # fmt: skip
    data = load_job_data(spec)
    assert data.input_shape == (8,) and data.task_classes["size"] == ["0", "1"]


def test_task_specs_fail_early(table):
    with pytest.raises(ValueError, match="label column"):
        mt_spec(table, tasks=[{"name": "kind"}, {"name": "size"}])
    with pytest.raises(ValueError, match="primary"):
        mt_spec(table, tasks=[{"name": "kind", "weight": 2.0}, {"name": "size", "label": "size"}])
    spec = spec_from_dict(synthetic_spec(tasks=[{"name": "main"}, {"name": "x", "label": "x"}]))
    with pytest.raises(Exception, match="one label per example"):
        load_job_data(spec)


def test_uncertainty_weighting_by_hand():
    """exp(-s) CE + s / 2 per extra task (Kendall et al. 2018), -1 labels ignored."""
    import torch.nn.functional as F
    from shiftray.config.schema import ModelSpec, TaskSpec
    from shiftray.data.batches.base import DABatch
    from shiftray.methods.base import ModelInfo
    from shiftray.methods.erm import ERM
    from shiftray.methods.params import ERMParams
    from shiftray.models.build import build_model
    from shiftray.train.module import TrainModule

    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="mlp", bottleneck_dim=4), (5,), 3, tasks={"t": 2},
                        task_uncertainty=True)  # fmt: skip
    module = TrainModule(model, ERM(ERMParams(), ModelInfo(4, 3)))
    module.tasks = (TaskSpec(name="t", label="t"),)
    with torch.no_grad():
        model.task_log_vars.fill_(0.5)
    x, y = torch.randn(6, 5), torch.tensor([0, 1, -1, 1, 0, -1])
    logs = {}
    got = module._task_losses(DABatch(x, None, x, y_aux=y[:, None]), logs)
    keep = y >= 0
    ce = F.cross_entropy(model.task_heads["t"](model(x)[1])[keep], y[keep])
    assert float(got.detach()) == pytest.approx(
        float(torch.exp(torch.tensor(-0.5)) * ce.detach() + 0.25), rel=1e-6
    )
