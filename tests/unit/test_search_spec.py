"""The search: section, checked before Ray starts; trial specs; the summary's arithmetic."""

from __future__ import annotations

import pytest
import yaml
from conftest import synthetic_spec
from shiftray.config.load import SpecError
from shiftray.search.space import default_point, load_search, param_space, trial_raw
from shiftray.search.summary import TrialRow, summarize


def write(tmp_path, search, **over):
    raw = synthetic_spec(name="s", **over)
    raw["search"] = search
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


SPACE = {"optim.lr": {"loguniform": [0.001, 0.1]}, "method.params.trade_off": {"uniform": [0.1, 1.0]}}


def test_a_valid_search(tmp_path):
    s = load_search(write(tmp_path, {"space": SPACE, "metric": "validator/bnm"}))
    assert s.search.num_samples == 8 and s.search.scheduler.name == "asha"
    # no held-out source rows: the validators that need them are not scored
    assert "dev" not in s.validators and "source_acc" not in s.validators and "bnm" in s.validators
    # the spec's own values (the method's default trade-off included) are the first trial
    assert default_point(s) == {"optim.lr": 0.05, "method.params.trade_off": 1.0}
    space = param_space(s.search)
    assert space["optim.lr"].lower == 0.001 and space["method.params.trade_off"].upper == 1.0


def test_every_bad_value_is_named_before_ray(tmp_path):
    space = {
        "optim.lr": {"loguniform": [0.001, 0.1]},
        "train.batch_size": {"choice": [32, 33]},  # 33 does not split over 2 workers
        "method.params.trade_of": {"uniform": [0.1, 1.0]},  # misspelt
        "finetune.strategy": {"choice": ["fine-tune", "melt"]},
    }
    with pytest.raises(SpecError) as e:
        load_search(write(tmp_path, {"space": space}, resources__num_workers=2))
    msg = str(e.value)
    for bad in ("train.batch_size = 33", "method.params.trade_of = 0.1", "finetune.strategy = 'melt'"):
        assert bad in msg, msg
    assert "optim.lr" not in msg


@pytest.mark.parametrize(
    ("search", "says"),
    [
        ({"space": SPACE, "metric": "target_acc"}, "for reporting only"),
        ({"space": SPACE, "metric": "validator/bmn"}, "closest: bnm"),
        ({"space": {"optim.lr": {"loguniform": [0.0, 0.1]}}}, "low must be positive"),
        ({"space": {"optim.lr": {"uniform": [0.1, 0.01]}}}, "low must be below high"),
        ({"space": {"optim.lr": {"normal": [0, 1]}}}, "a distribution is one of"),
        ({"space": {"name": {"choice": ["a", "b"]}}}, "cannot be searched"),
        ({"space": {}}, "search space is empty"),
        ({"space": SPACE, "metric": "source_val_acc"}, "source_val_fraction > 0"),
        ({"space": SPACE, "algorithm": "optuna", "num_samples": 2,
          "scheduler": {"name": "fifo"}, "validators": ["im"]} | {"space": {"optim.lr": {"grid": [0.1]}}},
         "use choice instead of grid"),
    ],
)  # fmt: skip
def test_bad_searches(tmp_path, search, says):
    with pytest.raises(SpecError, match=says):
        load_search(write(tmp_path, search))


def test_trial_raw_sets_paths_and_drops_search(tmp_path):
    s = load_search(write(tmp_path, {"space": SPACE}))
    raw = trial_raw(s.raw, {"optim.lr": 0.02, "finetune.group_lr_scales.0": 0.5})
    assert "search" not in raw and raw["optim"]["lr"] == 0.02
    assert raw["finetune"]["group_lr_scales"] == {"0": 0.5}
    assert s.raw["optim"]["lr"] == 0.05  # the base is untouched


def test_run_ignores_search_and_dump_omits_none(tmp_path):
    from shiftray.config.load import dump_spec, load_spec

    spec = load_spec(write(tmp_path, {"space": SPACE}))
    assert "search:" in dump_spec(spec)
    assert "search" not in dump_spec(spec.model_copy(update={"search": None}))


def test_summary_picks_and_correlates():
    rows = [
        TrialRow("a", {}, 100, {"validator/x": 0.1, "validator/y": 3.0, "target_acc": 60.0}, True),
        TrialRow("b", {}, 100, {"validator/x": 0.2, "validator/y": 2.0, "target_acc": 70.0}),
        TrialRow("c", {}, 50, {"validator/x": 0.3, "validator/y": 1.0, "target_acc": 80.0}),
        TrialRow("d", {}, 50, {"validator/x": 0.25, "validator/y": 0.5, "target_acc": 90.0}),
    ]
    s = summarize("s", "validator/x", 100, rows)
    assert s.selected == "c" and s.acc(s.selected) == 80.0
    assert s.oracle_best == "d" and s.default == "a"
    assert s.validators["validator/y"].spearman == pytest.approx(-1.0)
    assert s.validators["validator/y"].picked == "a"
    # x ranks a<b<d<c, accuracy a<b<c<d: rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert s.validators["validator/x"].spearman == pytest.approx(0.8)
    d = s.as_dict()
    assert d["selected_target_acc"] == 80.0 and d["default_target_acc"] == 60.0


def test_list_valued_choices_are_sampled_by_index(tmp_path):
    """Tune reads a list in a preset point as nested parameters: such choices go by index."""
    from shiftray.search.space import decode

    widths = [[8], [16], [16, 16]]
    s = load_search(write(tmp_path, {"space": {"method.params.disc_hidden": {"choice": widths}}}))
    assert s.indexed == {"method.params.disc_hidden": widths}
    assert param_space(s.search)["method.params.disc_hidden"].categories == [0, 1, 2]
    assert default_point(s) == {"method.params.disc_hidden": 1}  # the spec's [16]
    assert decode({"method.params.disc_hidden": 2}, s.indexed) == {"method.params.disc_hidden": [16, 16]}


def test_pbt_is_checked_before_ray_and_stays_inside_the_space(tmp_path):
    from shiftray.search.space import pbt_mutations, within_space

    pbt = {"name": "pbt", "perturbation_interval": 20}
    with pytest.raises(SpecError, match="scheduler pbt draws its own trials: use algorithm random"):
        load_search(write(tmp_path, {"space": SPACE, "scheduler": pbt, "algorithm": "optuna"}))
    grid = {**SPACE, "optim.lr": {"grid": [0.01, 0.1]}}
    with pytest.raises(SpecError, match="pbt perturbs values: use choice instead of grid"):
        load_search(write(tmp_path, {"space": grid, "scheduler": pbt}))
    with pytest.raises(SpecError, match="one-worker trials"):
        load_search(write(tmp_path, {"space": SPACE, "scheduler": pbt}, resources={"num_workers": 2}))
    space = {**SPACE, "method.params.disc_hidden": {"choice": [[8], [16, 16]]},
             "train.batch_size": {"randint": [16, 65]}}  # fmt: skip
    s = load_search(write(tmp_path, {"space": space, "scheduler": pbt}))
    mutations = pbt_mutations(s.search)
    assert mutations["method.params.disc_hidden"] == [0, 1]  # a list: explore shifts the index
    assert mutations["optim.lr"].lower == 0.001  # a range: explore multiplies (x0.8, x1.2)
    clip = within_space(s.search)
    assert clip({"optim.lr": 0.12, "method.params.trade_off": 0.05, "train.batch_size": 77}) == {
        "optim.lr": 0.1, "method.params.trade_off": 0.1, "train.batch_size": 64}
