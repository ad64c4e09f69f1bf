"""Driver-side live progress: tails <run_dir>/metrics.jsonl (written by rank 0) in a thread."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from shiftray.tracking import metrics_path


def _fmt_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def format_record(name: str, rec: dict, total: int, started: float) -> str:
    step = rec.get("step", 0)
    frac = step / total if total else 0.0
    width = 24
    filled = int(width * frac)
    bar = "#" * filled + "-" * (width - filled)
    parts = [f"{name:<28.28} [{bar}] {step:>6}/{total}"]
    if "loss" in rec:
        parts.append(f"loss {rec['loss']:.3f}")
    if "target_acc" in rec:
        parts.append(f"target_acc {rec['target_acc']:.2f}")
    if "steps_per_s" in rec:
        parts.append(f"{rec['steps_per_s']:.1f} it/s")
    elapsed = time.time() - started
    if 0 < frac < 1:
        parts.append(f"ETA {_fmt_eta(elapsed / frac * (1 - frac))}")
    return "  ".join(parts)


class LiveProgress:
    """Prints a progress line per new metrics record (in place on a terminal)."""

    def __init__(self, run_dir: Path, name: str, total: int, interval: float = 1.0, stream=None):
        self.path = metrics_path(run_dir)
        self.name, self.total, self.interval = name, total, interval
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._stop = threading.Event()
        self._offset = self.path.stat().st_size if self.path.exists() else 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.time()
        self._last_line = ""
        self._next_milestone = 0

    def __enter__(self) -> LiveProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()
        if self.tty and self._last_line:
            self.stream.write("\n")
            self.stream.flush()

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
            text = format_record(self.name, rec, self.total, self._started)
            if self.tty:
                self.stream.write("\r\033[K" + text)
                if "target_acc" in rec:
                    self.stream.write("\n")
            elif "target_acc" in rec or rec.get("step", 0) >= self._next_milestone:
                self.stream.write(text + "\n")  # not a terminal: every 10% and every evaluation
                self._next_milestone = rec.get("step", 0) + max(1, self.total // 10)
            self._last_line = text
        self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()
