"""Domain-adaptation overhead per step on CPU: DANN vs a plain supervised (ERM) step on the
same images (the digits LeNet, source + target batch), in one process.

    python bench/step_overhead.py [--batch 64] [--rounds 9] [--iters 10] [--threads 1]

Also counts each step's matmul and convolution FLOPs (forward + backward, `FlopCounterMode`):
the ratio a step with no overhead at all would have. Writes bench/results/cpu-step-overhead.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, time_per_call, write_result  # noqa: E402
from shiftray.config.load import load_spec  # noqa: E402
from shiftray.data.batches.base import DABatch  # noqa: E402
from shiftray.methods.base import ModelInfo  # noqa: E402
from shiftray.models.build import build_model  # noqa: E402
from shiftray.registry import METHODS  # noqa: E402
from shiftray.train.module import TrainModule  # noqa: E402
from shiftray.train.step import StepConfig, train_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=64, help="per domain")
    p.add_argument("--iters", type=int, default=10, help="steps per timing sample")
    p.add_argument("--rounds", type=int, default=9, help="interleaved samples per method")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_spec(ROOT / "jobs/digits/mnist-usps-dann.yaml")
    b = args.batch
    x_s, x_t = torch.rand(b, 1, 28, 28), torch.rand(b, 1, 28, 28)
    y = torch.randint(0, 10, (2 * b,))
    cfg = StepConfig.from_spec(spec, torch.device("cpu"), image_model=True)  # the spec defaults
    steps, flops = {}, {}
    for name in ("erm", "dann", "cdan", "mcc"):
        torch.manual_seed(0)
        model = build_model(spec.model, (1, 28, 28), 10)
        params = spec.method.resolved_params() if name == "dann" else METHODS.get(name).Params()
        if name == "cdan":
            params = params.model_copy(update={"disc_hidden": [500, 500]})
        module = TrainModule(model, METHODS.get(name)(params, ModelInfo(model.feature_dim, 10)))
        if cfg.channels_last:
            module = module.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
        # ERM sees the same 2b labelled images as the DA methods (source + target, one pass)
        batch = (
            DABatch(torch.cat([x_s, x_t]), y, x_t) if name == "erm" else DABatch(x_s, y[:b], x_t)
        ).to("cpu", cfg.channels_last)

        def step(module=module, opt=opt, batch=batch):
            train_step(module, opt, batch, 0.5, cfg)

        steps[name] = step
        with FlopCounterMode(display=False) as count:  # matmul / conv FLOPs, forward + backward
            step()
        flops[name] = count.get_total_flops()
    # interleaved rounds, so that drift of a noisy machine hits every method alike
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            samples[name].append(time_per_call(step, 2, args.iters))
    rows = []
    for name, secs in samples.items():
        sec = statistics.median(secs)
        rows.append(
            {
                "method": name,
                "ms_per_step": round(1000 * sec, 2),
                "images_per_s": round(2 * b / sec),
                "gflop_per_step": round(flops[name] / 1e9, 3),
            }
        )
    base = rows[0]["ms_per_step"]
    for r in rows:  # the time ratio, and the arithmetic's: what a perfect step would cost
        r["ratio_to_erm"] = round(r["ms_per_step"] / base, 3)
        r["flop_ratio_to_erm"] = round(r["gflop_per_step"] / rows[0]["gflop_per_step"], 3)
    print(
        f"LeNet digits step, {b}+{b} images, {args.threads} thread(s), channels_last={cfg.channels_last}"
    )
    print_table(
        rows,
        ["method", "ms_per_step", "images_per_s", "ratio_to_erm", "gflop_per_step",
         "flop_ratio_to_erm"],
    )  # fmt: skip
    write_result(
        "cpu-step-overhead", {"batch_per_domain": b, "threads": args.threads, "rows": rows}
    )


if __name__ == "__main__":
    main()
