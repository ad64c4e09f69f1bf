"""Signs that a run did not learn, loud at the end instead of a quiet number in a table.

- ``collapsed``: at least 95% of the target examples are predicted as one class, while (when
  the target's labels are known, for reporting) no class is that common. Features on a scale the
  learning rate cannot move (e.g. L1-normalised bag-of-words at ~0.0025 per feature) end here
  with every review in one class: see ``data.normalize``.
- ``source_near_chance``: accuracy on the labelled source training rows stays within 10 points
  of chance (100 / classes): the model did not even fit what it was shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Health:
    flags: dict[str, bool] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(self.flags.values())


def check_health(
    num_classes: int, predicted: list[int] | None, actual: list[int] | None,
    source_acc: float | None,
) -> Health:  # fmt: skip
    out = Health()
    if predicted and sum(predicted) and num_classes > 1:
        share = max(predicted) / sum(predicted)
        true_share = max(actual) / sum(actual) if actual and sum(actual) else 0.0
        out.flags["collapsed"] = share >= 0.95 and true_share < 0.95
        if out.flags["collapsed"]:
            out.messages.append(
                f"{100 * share:.0f}% of the target examples are predicted as one class: the "
                "model collapsed (inputs on an unusual scale? try data.normalize: zscore)"
            )
    if source_acc is not None and num_classes > 1:
        chance = 100.0 / num_classes
        out.flags["source_near_chance"] = source_acc < chance + 10.0
        if out.flags["source_near_chance"]:
            out.messages.append(
                f"accuracy on the source training rows is {source_acc:.1f}% (chance "
                f"{chance:.1f}%): the model did not fit the labelled data (learning rate, "
                "steps, or input scale: try data.normalize: zscore)"
            )
    return out
