"""Where the training thread's time goes, bare loop vs Ray Train worker (Linux only).

Runs the digits LeNet DANN job (one thread) by the bare loop, then by one Ray Train worker, and
over a steady window of each reads the training thread's ``/proc/<pid>/task/<tid>/schedstat``
(nanoseconds on the CPU, nanoseconds runnable but waiting on the run queue, time slices). As a
share of wall time: ``cpu`` near 1 means the thread was never off the CPU (no GIL waits, no
sleeps); ``runq`` is the time other processes (Ray's own included) took the CPU from it.

    python bench/ray_schedstat.py [--steps 1500] [--window 20]

Writes bench/results/cpu-ray-schedstat.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402
from shiftray.config.load import load_spec  # noqa: E402
from shiftray.data.loading import load_job_data  # noqa: E402
from shiftray.train.launch import ensure_ray, fit, fit_local  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "jobs/digits/mnist-usps-dann.yaml"


def _schedstat(pid: int, tid: str) -> tuple[int, int, int]:
    c, w, n = open(f"/proc/{pid}/task/{tid}/schedstat").read().split()
    return int(c), int(w), int(n)


def busiest_thread(pid: int, secs: float = 3.0) -> str:
    """The thread of ``pid`` that used the most CPU over ``secs``: the one that trains."""

    def cpu() -> dict[str, int]:
        out = {}
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                out[tid] = _schedstat(pid, tid)[0]
            except OSError:
                pass
        return out

    a = cpu()
    time.sleep(secs)
    b = cpu()
    return max(b, key=lambda t: b[t] - a.get(t, 0))


def window(pid: int, tid: str, secs: float) -> dict[str, float]:
    t0, (c0, w0, n0) = time.perf_counter(), _schedstat(pid, tid)
    time.sleep(secs)
    try:
        t1, (c1, w1, n1) = time.perf_counter(), _schedstat(pid, tid)
    except FileNotFoundError:
        raise SystemExit(
            f"the training thread {pid}/{tid} ended inside the {secs:g} s window: raise --steps"
        ) from None
    wall = t1 - t0
    return {
        "cpu": round((c1 - c0) / 1e9 / wall, 3),
        "runq": round((w1 - w0) / 1e9 / wall, 3),
        "slices_per_s": round((n1 - n0) / wall, 1),
    }


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])  # the field after the state letter


def own_train_worker() -> int:
    """The Ray Train worker of the Ray this process started (its raylet is our child): on a
    machine where another Ray runs, ``pgrep`` alone could pick that one's worker."""
    pids = subprocess.check_output(["pgrep", "-f", "ray::RayTrainWorker"], text=True).split()
    for pid in map(int, pids):
        p = pid
        while p > 1:
            try:
                p = _parent(p)
            except (FileNotFoundError, ProcessLookupError):
                break
            if p == os.getpid():
                return pid
    raise RuntimeError(f"no RayTrainWorker below this process (found {pids})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=3000, help="enough to outlast the window")
    p.add_argument("--window", type=float, default=20.0)
    args = p.parse_args()
    out = tempfile.mkdtemp()
    over = [f"train.steps={args.steps}", "train.log_every=50", f"train.eval_every={args.steps}",
            f"train.checkpoint_every={args.steps}", "tracking.wandb=disabled",
            "resources.torch_threads=1", f"tracking.output_dir={out}"]  # fmt: skip
    data = load_job_data(load_spec(JOB, over))
    import torch

    torch.set_num_threads(1)
    ensure_ray()
    rows = []
    contexts = (("bare loop", "bare", fit_local, 10), ("Ray Train, 1 worker", "ray", fit, 30))
    for name, tag, run, settle in contexts:
        th = threading.Thread(target=run, args=(load_spec(JOB, [*over, f"name={tag}"]), data))
        th.start()
        time.sleep(settle)  # past start-up, into the steady state
        if tag == "bare":
            pid = os.getpid()
        else:
            pid = own_train_worker()
        rows.append({"context": name, **window(pid, busiest_thread(pid), args.window)})
        th.join()
    print(f"digits LeNet DANN, one thread, {args.window:.0f} s steady window, training thread")
    print_table(rows, ["context", "cpu", "runq", "slices_per_s"])
    write_result("cpu-ray-schedstat", {"steps": args.steps, "window_s": args.window, "rows": rows})


if __name__ == "__main__":
    main()
