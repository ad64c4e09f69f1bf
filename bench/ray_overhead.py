"""Ray Train's cost on CPU: the same job (digits LeNet DANN, one worker, one thread) run by the
bare loop in this process and by a Ray Train worker; steady-state steps/s from metrics.jsonl
(median over log intervals, the first and last dropped) and the fixed start-up cost.

The two contexts alternate (bare, Ray, bare, Ray, ...) for ``--rounds`` rounds, so a slow spell
of the machine falls on both; the ratio is median(Ray rates) / median(bare rates), and each
round's own ratio is reported beside it.

    python bench/ray_overhead.py [--steps 600] [--rounds 3]

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
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    out = Path(tempfile.mkdtemp())
    over = [f"train.steps={args.steps}", "train.log_every=50", f"train.eval_every={args.steps}",
            f"train.checkpoint_every={args.steps}", "tracking.wandb=disabled", "resources.torch_threads=1",
            f"tracking.output_dir={out}"]  # fmt: skip
    data = load_job_data(load_spec(ROOT / "jobs/digits/mnist-usps-dann.yaml", over))
    import torch

    torch.set_num_threads(1)
    t = time.perf_counter()
    ensure_ray()
    init_s = time.perf_counter() - t
    contexts = (("bare loop", "bare", fit_local), ("Ray Train, 1 worker", "ray", fit))
    runs: dict[str, list] = {name: [] for name, _, _ in contexts}
    for r in range(args.rounds):
        for name, tag, run in contexts:
            res = run(
                load_spec(ROOT / "jobs/digits/mnist-usps-dann.yaml", [*over, f"name={tag}-{r}"]),
                data,
            )
            runs[name].append((steady(res.run_dir), res.seconds))
    rows = []
    for name, got in runs.items():
        rate = statistics.median(g[0] for g in got)
        wall = statistics.median(g[1] for g in got)
        rows.append({"context": name, "steady_steps_per_s": round(rate, 2),
                     "per_round": [round(g[0], 2) for g in got], "wall_s": round(wall, 1),
                     "fixed_s": round(wall - args.steps / rate, 1)})  # fmt: skip
    ratio = rows[1]["steady_steps_per_s"] / rows[0]["steady_steps_per_s"]
    per_round = [
        round(a[0] / b[0], 3)
        for a, b in zip(runs["Ray Train, 1 worker"], runs["bare loop"], strict=True)
    ]
    print(
        f"digits LeNet DANN, {args.steps} steps, 64+64 images, 1 thread, {args.rounds} alternating rounds; ray.init {init_s:.1f} s"
    )
    print_table(rows, ["context", "steady_steps_per_s", "per_round", "wall_s", "fixed_s"])
    print(f"Ray Train / bare steady-state throughput: {ratio:.3f} (per round: {per_round})")
    write_result("cpu-ray-overhead", {"steps": args.steps, "rounds": args.rounds, "ray_init_s": round(init_s, 1),
                                      "rows": rows, "throughput_ratio": round(ratio, 3),
                                      "per_round_ratio": per_round})  # fmt: skip


if __name__ == "__main__":
    main()
