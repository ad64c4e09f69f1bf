"""TensorBoard's HParams view for every trial of a search (Tune writes the event files)."""

from __future__ import annotations

from ray.tune.logger import TBXLoggerCallback


class HParamsLogger(TBXLoggerCallback):
    """Tune's TensorBoard logger, with every trial in the HParams view. Tune logs only the
    values a search algorithm sampled (``trial.evaluated_params``), so the default trial, a
    preset point, would be missing; here it is logged with its values at the searched paths.

        tensorboard --logdir SEARCH_DIR      # live, while the search runs
    """

    def __init__(self, keys: list[str]) -> None:
        super().__init__()
        self.keys = list(keys)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        if not trial.evaluated_params:
            trial.evaluated_params = {k: trial.config[k] for k in self.keys if k in trial.config}
        super().log_trial_end(trial, failed)
