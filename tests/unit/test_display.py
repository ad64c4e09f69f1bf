"""Terminal output in both modes: plain lines for pipes and CI, rich on a (forced) terminal."""

import io
import json

from rich.console import Console
from shiftray.display import print_table
from shiftray.progress import LiveProgress

ROWS = [
    {"run": "mnist-usps-erm", "target_acc": "74.19"},
    {"run": "mnist-usps-dann", "target_acc": "90.53"},
]


def _terminal() -> Console:
    return Console(force_terminal=True, file=io.StringIO(), width=120)


def test_table_is_plain_text_when_not_a_terminal():
    out = io.StringIO()
    print_table(ROWS, ["run", "target_acc"], out=out)
    assert out.getvalue() == (
        "run              target_acc\n"
        "---------------  ----------\n"
        "mnist-usps-erm   74.19     \n"
        "mnist-usps-dann  90.53     \n"
    )


def test_table_is_a_rich_table_on_a_terminal():
    console = _terminal()
    print_table(ROWS, ["run", "target_acc"], console=console)
    text = console.file.getvalue()
    assert "┃" in text and "mnist-usps-dann" in text and "90.53" in text
    assert "---------------" not in text


def _records(run_dir, total):
    with open(run_dir / "metrics.jsonl", "w") as f:
        for step in range(1, total + 1):
            rec = {"step": step, "loss": 1.0 / step, "steps_per_s": 10.0}
            if step % 50 == 0:
                rec["target_acc"] = 50.0 + step / 10
            f.write(json.dumps(rec) + "\n")


def test_progress_prints_plain_lines_every_tenth_and_evaluation(tmp_path):
    out = io.StringIO()
    with LiveProgress(tmp_path, "job", 100, interval=60, stream=out):
        _records(tmp_path, 100)
    lines = out.getvalue().splitlines()
    steps = [int(line.split("]")[1].split("/")[0]) for line in lines]
    assert steps == [1, 11, 21, 31, 41, 50, 60, 70, 80, 90, 100]  # 10% on from the last line
    assert "\x1b" not in out.getvalue() and "target_acc 55.00" in lines[5]


def test_progress_is_a_rich_bar_on_a_terminal(tmp_path):
    console = _terminal()
    with LiveProgress(tmp_path, "job", 100, interval=60, console=console):
        _records(tmp_path, 100)
    text = console.file.getvalue()
    assert "100/100" in text and "━" in text  # the bar, complete
    assert "job  step 50/100  loss 0.020  target_acc 55.00" in text  # evaluations stay


def test_the_eta_follows_the_wall_clock_rate_seen_since_the_first_record():
    """A Ray run's first record comes after start-up; the ETA counts from it, at the rate the
    driver sees (evaluations included), so '1470 it/s ETA 0m52s' for 5,000 steps cannot
    happen: here 1,000 steps in 10 s leave 3,000 steps, 30 s."""
    from shiftray.progress import format_record

    line = format_record(
        "job", {"step": 2000, "steps_per_s": 150.0}, 5000, (100.0, 1000), now=110.0
    )
    assert "150.0 it/s" in line and line.endswith("ETA 0m30s")
    assert "ETA" not in format_record("job", {"step": 1000}, 5000, (100.0, 1000), now=100.0)
