"""Every job spec in jobs/ validates, and names data and components that exist."""

from pathlib import Path

import pytest
from shiftray.config.load import load_spec
from shiftray.registry import DATASETS

JOBS = sorted((Path(__file__).resolve().parents[1] / "jobs").rglob("*.yaml"))


def test_there_are_jobs():
    assert len(JOBS) >= 8


@pytest.mark.parametrize("path", JOBS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_job_spec_is_valid(path):
    spec = load_spec(path)
    bench = DATASETS.get(spec.data.benchmark)
    assert spec.data.source != spec.data.target
    command = "tune" if spec.search is not None else "run"
    assert (
        f"shiftray {command} jobs/{path.parent.name}/{path.name}" in path.read_text()
    )  # says how to run it
    if spec.search is not None:  # and its space: every value it can take
        from shiftray.search.space import load_search

        assert load_search(path).validators
    assert spec.data.source in bench.domains(bench.Options.model_validate(spec.data.options))
