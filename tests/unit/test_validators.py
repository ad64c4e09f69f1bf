"""Reference tests: each registered validator against a hand computation on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from shiftray.evaluate.validators import ValidationData, run_validators
from shiftray.evaluate.validators.base import sample_rows
from shiftray.evaluate.validators.scores import density_ratio, dev_risk, mix_partners
from shiftray.registry import VALIDATORS

T = torch.tensor


def data(probs, **kw) -> ValidationData:
    p = T(probs, dtype=torch.float64)
    return ValidationData(p, kw.pop("features", p.clone()), **kw)


def h(*p: float) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


def test_entropy_and_im():
    d = data([[1.0, 0.0], [0.5, 0.5]])
    assert VALIDATORS.get("entropy")(d) == pytest.approx(-math.log(2) / 2)
    assert VALIDATORS.get("im")(d) == pytest.approx(h(0.75, 0.25) - math.log(2) / 2)


def test_bnm():
    # P^T P = diag(2, 1): singular values sqrt(2) and 1, over N = 3 rows
    d = data([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert VALIDATORS.get("bnm")(d) == pytest.approx((math.sqrt(2) + 1) / 3)


def test_snd():
    # rows 0 and 1 agree (similarity 1), row 2 is orthogonal to both (similarity 0)
    d = data([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    near = 1 / (1 + math.exp(-1 / 0.05))  # softmax of (1/0.05, 0/0.05)
    want = (2 * h(near, 1 - near) + math.log(2)) / 3  # row 2: two equal neighbours
    assert VALIDATORS.get("snd")(d) == pytest.approx(want)


def test_source_acc():
    d = data([[1.0, 0.0]], source_probs=T([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=torch.float64),
             source_labels=T([0, 1, 1]))  # fmt: skip
    assert VALIDATORS.get("source_acc")(d) == pytest.approx(2 / 3)


def test_dev_risk_by_hand():
    losses, w = [1.0, 2.0, 3.0], [0.5, 1.0, 2.5]
    lw = [a * b for a, b in zip(losses, w, strict=True)]
    m_lw, m_w = sum(lw) / 3, sum(w) / 3
    cov = sum((a - m_lw) * (b - m_w) for a, b in zip(lw, w, strict=True)) / 2
    var = sum((b - m_w) ** 2 for b in w) / 2
    eta = -cov / var
    assert dev_risk(np.array(losses), np.array(w)) == pytest.approx(m_lw + eta * m_w - eta)
    assert dev_risk(np.array(losses), np.ones(3)) == pytest.approx(2.0)  # no variance: mean loss


def test_density_ratio_follows_the_shift():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(400, 2))
    same = density_ratio(src, rng.normal(size=(400, 2)))
    assert abs(np.median(same) - 1) < 0.15  # one distribution: weights about 1
    w = density_ratio(src, rng.normal(size=(400, 2)) + [1.5, 0])
    assert np.corrcoef(src[:, 0], np.log(w))[0, 1] > 0.95  # logistic: log w linear in x


def test_dev_prefers_the_model_right_on_source():
    rng = np.random.default_rng(0)
    feats = T(rng.normal(size=(64, 3)))
    labels = T(rng.integers(0, 2, 64))
    good = torch.nn.functional.one_hot(labels, 2).double() * 0.98 + 0.01
    kw = {"features": feats, "source_features": feats + 0.1, "source_labels": labels}
    score = VALIDATORS.get("dev")
    assert score(data(good.numpy(), source_probs=good, **kw)) > score(
        data(good.numpy(), source_probs=good.flip(1), **kw)
    )


def test_class_ami():
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 10
    cluster = np.repeat(np.arange(3), 20)
    feats = T(centres[cluster] + rng.normal(scale=0.1, size=(60, 3)))
    follows = torch.nn.functional.one_hot(T((cluster + 1) % 3), 3).double()  # renamed: AMI 1
    assert VALIDATORS.get("class_ami")(data(follows.numpy(), features=feats)) == pytest.approx(1.0)
    shuffled = torch.nn.functional.one_hot(T(rng.permutation(cluster)), 3).double()
    assert abs(VALIDATORS.get("class_ami")(data(shuffled.numpy(), features=feats))) < 0.1


def test_mixval():
    labels = np.array([0, 0, 1, 1])
    probs = np.eye(2)[labels]
    x = T(np.eye(2)[labels], dtype=torch.float32)
    # a model that reads its input as probabilities: every probe answers the 0.55 side's label
    faithful = data(probs, inputs=x, predict=lambda z: z.double())
    assert VALIDATORS.get("mixval")(faithful) == pytest.approx(2.0)
    # a model that always answers class 0: right on half the inter and half the intra probes
    always0 = data(probs, inputs=x, predict=lambda z: T([[1.0, 0.0]] * len(z), dtype=torch.float64))
    assert VALIDATORS.get("mixval")(always0) == pytest.approx(1.0)


def test_mix_partners():
    labels = np.array([0, 0, 1, 2])
    rng = np.random.default_rng(0)
    same = mix_partners(labels, True, rng)
    assert list(same) == [1, 0, -1, -1]  # rows 2 and 3 have no same-class partner
    other = mix_partners(labels, False, rng)
    assert all(labels[j] != labels[i] for i, j in enumerate(other))


def test_sample_rows_fixed():
    assert list(sample_rows(5, 10)) == [0, 1, 2, 3, 4]
    a, b = sample_rows(1000, 16, 0), sample_rows(1000, 16, 0)
    assert list(a) == list(b) and len(set(a)) == 16 and list(a) == sorted(a)


def test_run_validators_on_a_model_restores_its_mode():
    from shiftray.data.arrays import DomainArrays

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)
            self.drop = torch.nn.Dropout(0.5)

        def forward(self, x):
            f = self.drop(self.body(x))
            return self.head(f), f

    net = Net().train()
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    src = DomainArrays(x[:20], np.arange(20) % 2, "s", "val")
    names = tuple(VALIDATORS.names())
    got = run_validators(net, names, x, src, 16, torch.device("cpu"), rows=32)
    again = run_validators(net, names, x, src, 16, torch.device("cpu"), rows=32)
    assert net.training  # restored
    assert got == again  # eval mode: dropout off, the same sample: the same scores
    assert set(got) == {f"validator/{n}" for n in names}
    assert all(np.isfinite(v) for v in got.values())


def test_spec_checks_validators():
    from shiftray.config.load import SpecError, spec_from_dict

    base = {"name": "v", "data": {"benchmark": "synthetic", "source": "a", "target": "b"}}
    with pytest.raises(SpecError, match="closest: bnm"):
        spec_from_dict(base | {"train": {"validators": ["bmn"]}})
    with pytest.raises(SpecError, match="source_val_fraction > 0"):
        spec_from_dict(base | {"train": {"validators": ["dev"]}})
    ok = base | {"train": {"validators": ["dev", "snd"]}}
    ok["data"] = ok["data"] | {"source_val_fraction": 0.1}
    assert spec_from_dict(ok).train.validators == ["dev", "snd"]


def test_every_evaluation_reports_every_validator(tmp_path):
    """A training run with train.validators reports validator/<name> at each evaluation
    (checkpointed in state.json), beside target_acc, which no validator reads."""
    import json

    from conftest import synthetic_spec
    from shiftray.config.load import spec_from_dict
    from shiftray.data.loading import load_job_data
    from shiftray.train.loop import train_loop_per_worker
    from shiftray.train.run import LoopConfig

    names = VALIDATORS.names()
    raw = synthetic_spec(name="val", train__validators=names, train__validator_rows=64)
    raw["data"]["source_val_fraction"] = 0.2
    spec = spec_from_dict(raw)
    result = train_loop_per_worker(LoopConfig(spec, tmp_path / "val", load_job_data(spec)))
    assert {f"validator/{n}" for n in names} <= set(result) and "target_acc" in result
    first = json.loads((tmp_path / "val/checkpoint_00000020/state.json").read_text())["metrics"]
    assert {f"validator/{n}" for n in names} <= set(first)
    assert first["validator/snd"] != result["validator/snd"]  # scored anew at each evaluation
