"""Label-free model selection: validators (registry ``validator``, `scores`) scored on a fixed
sample of target rows at each evaluation (`base`), and the whole-set scores early stopping
watches (`running`)."""

from shiftray.evaluate.validators.base import (
    METRIC_PREFIX,
    ValidationData,
    collect,
    needs_source,
    run_validators,
    score,
    validator,
)
from shiftray.evaluate.validators.running import EarlyStopper, unsupervised_scores

__all__ = [
    "METRIC_PREFIX", "EarlyStopper", "ValidationData", "collect", "needs_source",
    "run_validators", "score", "unsupervised_scores", "validator",
]  # fmt: skip
