"""Search overhead: a search's wall time against the training-loop time of its trials.

    python bench/search_overhead.py [--steps 1000] [--trials 4] [--job jobs/digits/mnist-usps-dann-search.yaml]

Runs the job's search with one trial at a time (``max_concurrent_trials: 1``, FIFO, so the
trials' loop times add up to what the wall clock could at best show), on a fresh embedded Ray,
and splits the wall time: Ray start-up; the driver's data read and put in the object store;
per trial, the training loop (``loop_s``: the loop's own clock, evaluations and checkpoints
included) and the rest of the trial's time (``time_total_s`` - ``loop_s``: the trial
process, spec, data fetch, model build); and what is left (Tune's scheduling, the summary).
Writes bench/results/cpu-search-overhead.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--job", default=str(ROOT / "jobs/digits/mnist-usps-dann-search.yaml"))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--trials", type=int, default=4)
    args = p.parse_args()
    t0 = time.perf_counter()
    from shiftray.search.driver import run_search
    from shiftray.search.space import load_search
    from shiftray.train.launch import ensure_ray

    out = tempfile.mkdtemp(prefix="search-overhead-")
    s = load_search(args.job, [f"train.steps={args.steps}", f"train.eval_every={args.steps // 2}",
                               f"tracking.output_dir={out}", f"search.num_samples={args.trials}",
                               "search.max_concurrent_trials=1", "search.scheduler.name=fifo"])  # fmt: skip
    t_import = time.perf_counter() - t0
    ensure_ray()
    t_ray = time.perf_counter() - t0 - t_import
    result = run_search(s)
    wall = time.perf_counter() - t0
    trials = result.summary.trials
    loop = sum(t.metrics["loop_s"] for t in trials)
    trial_total = sum(t.metrics["time_total_s"] for t in trials)
    rows = [{"trial": t.trial_id, "steps": t.step, "loop_s": round(t.metrics["loop_s"], 1),
             "trial_s": round(t.metrics["time_total_s"], 1),
             "set-up_s": round(t.metrics["time_total_s"] - t.metrics["loop_s"], 1)} for t in trials]  # fmt: skip
    print_table(rows, ["trial", "steps", "loop_s", "trial_s", "set-up_s"])
    parts = {
        "imports": t_import, "ray start": t_ray, "trials' loops": loop,
        "trials' set-up": trial_total - loop,
        "driver: data, Tune scheduling, summary": wall - t_import - t_ray - trial_total,
    }
    print_table([{"part": k, "seconds": round(v, 1), "share": f"{v / wall:.0%}"} for k, v in parts.items()],
                ["part", "seconds", "share"])  # fmt: skip
    ratio = wall / loop
    print(f"wall {wall:.1f} s = {ratio:.2f} x the trials' training loops ({loop:.1f} s)")
    write_result("cpu-search-overhead", {
        "job": str(Path(args.job).relative_to(ROOT)) if args.job.startswith(str(ROOT)) else args.job,
        "steps": args.steps, "trials": args.trials, "wall_s": round(wall, 1),
        "loop_s": round(loop, 1), "ratio": round(ratio, 3),
        "parts": {k: round(v, 1) for k, v in parts.items()}, "rows": rows,
    })  # fmt: skip


if __name__ == "__main__":
    main()
