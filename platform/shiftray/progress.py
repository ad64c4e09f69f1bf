"""Driver-side live progress: tails <run_dir>/metrics.jsonl (written by rank 0) in a thread.

On a terminal a rich progress bar moves in place and each evaluation leaves a line above it;
anywhere else (pipes, CI, ``--quiet``) one plain line every 10% of the steps and at every
evaluation, the lines tests and logs read. See `shiftray.display` for how the mode is chosen.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from shiftray.display import terminal_console
from shiftray.tracking import metrics_path

if TYPE_CHECKING:
    from rich.console import Console


def _fmt_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _metrics(rec: dict) -> list[str]:
    parts = []
    if "loss" in rec:
        parts.append(f"loss {rec['loss']:.3f}")
    if "target_acc" in rec:
        parts.append(f"target_acc {rec['target_acc']:.2f}")
    if "steps_per_s" in rec:
        parts.append(f"{rec['steps_per_s']:.1f} it/s")
    return parts


def format_record(name: str, rec: dict, total: int, origin: tuple[float, int] | None,
                  now: float | None = None) -> str:  # fmt: skip
    """One plain progress line. The ETA is the wall-clock rate seen since ``origin`` (the time
    and step of the first record this driver saw), so it counts evaluations and checkpoints
    and not Ray's start-up; ``it/s`` is the loop's own rate over its last training steps."""
    step = rec.get("step", 0)
    frac = step / total if total else 0.0
    width = 24
    filled = int(width * frac)
    bar = "#" * filled + "-" * (width - filled)
    parts = [f"{name:<28.28} [{bar}] {step:>6}/{total}", *_metrics(rec)]
    if origin is not None and 0 < frac < 1 and step > origin[1]:
        per_step = ((now or time.time()) - origin[0]) / (step - origin[1])
        parts.append(f"ETA {_fmt_eta(per_step * (total - step))}")
    return "  ".join(parts)


class LiveProgress:
    """Shows each new metrics record: a rich bar on a terminal, plain lines otherwise.

    ``console`` overrides the terminal check (tests pass a forced rich ``Console``)."""

    def __init__(
        self,
        run_dir: Path,
        name: str,
        total: int,
        interval: float = 1.0,
        stream: TextIO | None = None,
        console: Console | None = None,
    ):
        self.path = metrics_path(run_dir)
        self.name, self.total, self.interval = name, total, interval
        self.stream = stream or sys.stdout
        self.console = terminal_console(self.stream, console)
        self._stop = threading.Event()
        self._offset = self.path.stat().st_size if self.path.exists() else 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._origin: tuple[float, int] | None = None  # (time, step) of the first record seen
        self._next_milestone = 0
        self._bar = self._task = None

    def __enter__(self) -> LiveProgress:
        if self.console is not None:
            from rich import progress as rp

            self._bar = rp.Progress(
                rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
                rp.TextColumn("{task.fields[metrics]}"), rp.TimeRemainingColumn(),
                console=self.console, refresh_per_second=4,
            )  # fmt: skip
            self._task = self._bar.add_task(self.name, total=self.total, metrics="")
            self._bar.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()
        if self._bar is not None:
            self._bar.stop()

    def _show(self, rec: dict) -> None:
        if self._origin is None:
            self._origin = (time.time(), rec.get("step", 0))
        if self._bar is not None:
            metrics = "  ".join(_metrics(rec))
            self._bar.update(self._task, completed=rec.get("step", 0), metrics=metrics)
            if "target_acc" in rec:  # evaluations stay on screen, above the bar
                step = f"step {rec.get('step', 0)}/{self.total}"
                line = "  ".join([self.name, step, metrics])
                self._bar.console.print(line, markup=False, highlight=False)
        elif "target_acc" in rec or rec.get("step", 0) >= self._next_milestone:
            text = format_record(self.name, rec, self.total, self._origin)
            self.stream.write(text + "\n")  # not a terminal: every 10% and every evaluation
            self._next_milestone = rec.get("step", 0) + max(1, self.total // 10)

    def _poll(self) -> None:
        if not self.path.exists():
            return
        if self.path.stat().st_size < self._offset:
            self._offset = 0  # the file was rewritten (a resumed run)
        with open(self.path) as f:
            f.seek(self._offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self._offset += len(complete.encode())
        for line in complete.splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            self._show(rec)
        if self._bar is None:
            self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()
