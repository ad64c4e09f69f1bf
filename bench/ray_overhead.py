"""Ray Train's cost on CPU: the same job (digits LeNet DANN, one worker, one thread) run by the
bare loop in this process and by a Ray Train worker; steady-state steps/s from metrics.jsonl
(median over log intervals, the first dropped) and the fixed start-up cost.

    python bench/ray_overhead.py [--steps 600]

Writes bench/results/cpu-ray-overhead.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402
from shiftray.config.load import load_spec  # noqa: E402
from shiftray.data.loading import load_job_data  # noqa: E402
from shiftray.tracking import read_metrics  # noqa: E402
from shiftray.train.launch import ensure_ray, fit, fit_local  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def steady(run_dir: Path) -> float:
    rates = [r["steps_per_s"] for r in read_metrics(run_dir) if "steps_per_s" in r][1:-1]
    return statistics.median(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=600)
    args = p.parse_args()
    out = Path(tempfile.mkdtemp())
    over = [f"train.steps={args.steps}", "train.log_every=50", f"train.eval_every={args.steps}",
            f"train.checkpoint_every={args.steps}", "tracking.wandb=disabled", "resources.torch_threads=1",
            f"tracking.output_dir={out}"]  # fmt: skip
    bare_spec = load_spec(ROOT / "jobs/digits/mnist-usps-dann.yaml", [*over, "name=bare"])
    ray_spec = load_spec(ROOT / "jobs/digits/mnist-usps-dann.yaml", [*over, "name=ray"])
    data = load_job_data(bare_spec)
    import torch

    torch.set_num_threads(1)
    bare = fit_local(bare_spec, data)
    t = time.perf_counter()
    ensure_ray()
    init_s = time.perf_counter() - t
    ray = fit(ray_spec, data)
    rows = []
    for name, res, spec in (("bare loop", bare, bare_spec), ("Ray Train, 1 worker", ray, ray_spec)):
        rate = steady(res.run_dir)
        rows.append({"context": name, "steady_steps_per_s": round(rate, 2), "wall_s": round(res.seconds, 1),
                     "fixed_s": round(res.seconds - spec.train.steps / rate, 1)})  # fmt: skip
    ratio = rows[1]["steady_steps_per_s"] / rows[0]["steady_steps_per_s"]
    print(f"digits LeNet DANN, {args.steps} steps, 64+64 images, 1 thread; ray.init {init_s:.1f} s")
    print_table(rows, ["context", "steady_steps_per_s", "wall_s", "fixed_s"])
    print(f"Ray Train / bare steady-state throughput: {ratio:.3f}")
    write_result("cpu-ray-overhead", {"steps": args.steps, "ray_init_s": round(init_s, 1), "rows": rows,
                                      "throughput_ratio": round(ratio, 3)})  # fmt: skip


if __name__ == "__main__":
    main()
