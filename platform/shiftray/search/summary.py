"""What a search found, and how well each validator would have picked.

Per trial: its values, how far it ran (ASHA stops some early), every validator at its last
evaluation and the oracle target accuracy (``target_acc``, target labels: for this report
only, never for selection). Per validator v over the trials that reported it:

- Spearman's rank correlation rho(v, target_acc);
- the trial v would pick (highest v at its last evaluation) and that trial's target accuracy;

beside the oracle-best trial's accuracy and the default trial's (the job spec's own values,
when it ran as the first trial).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

ORACLE = "target_acc"


@dataclass
class TrialRow:
    trial_id: str
    config: dict[str, Any]
    step: int
    metrics: dict[str, float]
    is_default: bool = False


@dataclass
class ValidatorPick:
    spearman: float | None
    picked: str | None
    picked_target_acc: float | None


@dataclass
class SearchSummary:
    name: str
    metric: str
    steps: int
    trials: list[TrialRow]
    selected: str | None
    validators: dict[str, ValidatorPick] = field(default_factory=dict)
    oracle_best: str | None = None
    default: str | None = None

    def trial(self, trial_id: str | None) -> TrialRow | None:
        return next((t for t in self.trials if t.trial_id == trial_id), None)

    def acc(self, trial_id: str | None) -> float | None:
        t = self.trial(trial_id)
        return None if t is None else t.metrics.get(ORACLE)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["selected_target_acc"] = self.acc(self.selected)
        out["oracle_best_target_acc"] = self.acc(self.oracle_best)
        out["default_target_acc"] = self.acc(self.default)
        return out


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def spearman(a: list[float], b: list[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def pick(trials: list[TrialRow], key: str) -> str | None:
    scored = [t for t in trials if _finite(t.metrics.get(key))]
    return max(scored, key=lambda t: t.metrics[key]).trial_id if scored else None


def summarize(name: str, metric: str, steps: int, trials: list[TrialRow]) -> SearchSummary:
    out = SearchSummary(name, metric, steps, trials, pick(trials, metric))
    keys = sorted({k for t in trials for k in t.metrics if k.startswith("validator/")})
    if metric == "source_val_acc":
        keys.append(metric)
    for key in keys:
        both = [t for t in trials if _finite(t.metrics.get(key)) and _finite(t.metrics.get(ORACLE))]
        rho = spearman([t.metrics[key] for t in both], [t.metrics[ORACLE] for t in both])
        chosen = pick(trials, key)
        out.validators[key] = ValidatorPick(rho, chosen, out.acc(chosen))
    out.oracle_best = pick(trials, ORACLE)
    out.default = next((t.trial_id for t in trials if t.is_default), None)
    return out


def _fmt(x: Any, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "-"


def print_summary(s: SearchSummary, out=None) -> None:
    from shiftray.display import print_table

    paths = list(s.trials[0].config) if s.trials else []
    rows = []
    for t in sorted(s.trials, key=lambda t: -t.metrics.get(s.metric, -math.inf)):
        mark = ("selected " if t.trial_id == s.selected else "") + ("default" if t.is_default else "")
        rows.append({"trial": t.trial_id, **{p: _short(t.config.get(p)) for p in paths},
                     "step": t.step, s.metric: _fmt(t.metrics.get(s.metric), 4),
                     "target_acc (report only)": _fmt(t.metrics.get(ORACLE)), "": mark.strip()})  # fmt: skip
    print_table(rows, ["trial", *paths, "step", s.metric, "target_acc (report only)", ""], out)
    vrows = [{"validator": k, "spearman vs target_acc": _fmt(v.spearman), "picks": v.picked or "-",
              "its target_acc": _fmt(v.picked_target_acc)} for k, v in s.validators.items()]  # fmt: skip
    print_table(vrows, ["validator", "spearman vs target_acc", "picks", "its target_acc"], out)
    print(f"selected by {s.metric}: {s.selected} (target_acc {_fmt(s.acc(s.selected))}); "
          f"oracle best: {s.oracle_best} ({_fmt(s.acc(s.oracle_best))}); default: "
          f"{s.default or 'not run'} ({_fmt(s.acc(s.default))})", file=out)  # fmt: skip


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    text = str(v)
    return text if len(text) <= 40 else text[:37] + "..."
