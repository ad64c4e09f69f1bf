"""One evaluation of a model during or after training: every score the loop reports.

Target-test accuracy (target labels are read here, for reporting only; skipped when the target
has none), source-validation accuracy when a labelled source split was held out, and the
label-free scores on the unlabelled target training set when asked for (or when there are no
target labels). All are over the whole split, split across ranks and all-reduced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from shiftray.data.arrays import DomainArrays, DomainData
from shiftray.evaluate.metrics import evaluate
from shiftray.evaluate.validators import run_validators, unsupervised_scores


@dataclass
class Evaluation:
    metrics: dict[str, float] = field(default_factory=dict)
    per_class: list[float | None] | None = None  # target-test accuracy per class (class order)
    predicted: list[int] | None = None  # target-test examples predicted as each class
    actual: list[int] | None = None  # target-test examples of each class

    def detail(self) -> dict:
        """What a checkpoint keeps besides the metrics (state.json)."""
        return {"per_class": self.per_class, "predicted": self.predicted, "actual": self.actual}

    @classmethod
    def restore(cls, metrics: dict[str, float], detail: dict | None) -> Evaluation:
        return cls(dict(metrics), **(detail or {}))


def task_accuracies(model, test: DomainArrays, args: tuple) -> dict[str, float]:
    """A multi-task model's extra tasks on the target test rows that carry their labels:
    ``task/<name>/target_acc`` (the primary task is ``target_acc``)."""
    from shiftray.models.build import TaskView

    base = getattr(model, "module", model)  # DDP wraps it
    out: dict[str, float] = {}
    for name, y in (test.tasks or {}).items():
        if name not in getattr(base, "task_heads", {}) or not (y >= 0).any():
            continue
        rows = test.rows(y >= 0)
        rows = DomainArrays(rows.x, rows.tasks[name], test.domain, test.split)
        out[f"task/{name}/target_acc"] = evaluate(TaskView(base, name), rows, *args).accuracy
    return out


def evaluate_all(
    model, data: DomainData, batch_size: int, device: torch.device, rank: int = 0,
    world: int = 1, label_free: bool = False, autocast_dtype: torch.dtype | None = None,
    validators: tuple[str, ...] = (), validator_rows: int = 2048,
) -> Evaluation:  # fmt: skip
    """Under the training step's autocast dtype (bf16 on GPUs by default); losses and
    probabilities are computed in fp32. ``validators``: registered validators scored as
    ``validator/<name>`` on a fixed sample of the target training rows (every rank the same)."""
    if autocast_dtype is not None:
        with torch.autocast(device.type, dtype=autocast_dtype):
            return evaluate_all(model, data, batch_size, device, rank, world, label_free,
                                None, validators, validator_rows)  # fmt: skip
    args = (batch_size, device, rank, world)
    out = Evaluation()
    if data.target_test.y is not None:
        res = evaluate(model, data.target_test, *args)
        out.metrics = {"target_acc": res.accuracy, "target_loss": res.loss, "eval_count": res.count}
        out.per_class, out.predicted, out.actual = res.per_class, res.predicted, res.actual
    if data.source_val is not None:
        out.metrics["source_val_acc"] = evaluate(model, data.source_val, *args).accuracy
    out.metrics |= task_accuracies(model, data.target_test, args)
    unlabelled = data.target if len(data.target) else data.target_test.without_labels()
    if label_free or data.target_test.y is None:  # no target labels: the label-free scores
        out.metrics |= unsupervised_scores(model, unlabelled, *args)
    if validators:
        out.metrics |= run_validators(model, validators, unlabelled.x, data.source_val,
                                      batch_size, device, validator_rows)  # fmt: skip
    return out
