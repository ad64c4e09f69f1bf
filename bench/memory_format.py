"""NCHW vs NHWC (channels_last) on CPU: one training step (forward, backward, SGD) of a few
backbones on random images, one torch thread. The figures behind ``train.channels_last: auto``
being on for image models on CPU too.

    python bench/memory_format.py

Writes bench/results/cpu-memory-format.json.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, time_per_call, write_result  # noqa: E402
from shiftray.config.schema import ModelSpec  # noqa: E402
from shiftray.models.build import build_model  # noqa: E402

ROUNDS = 3  # interleaved NCHW / NHWC samples per case; the median is reported
CASES = [("lenet", (1, 28, 28), 128), ("lenet", (3, 32, 32), 128),
         ("timm/test_resnet", (3, 32, 32), 32), ("timm/resnet18", (3, 64, 64), 32)]  # fmt: skip


def step_fn(backbone: str, shape: tuple[int, ...], batch: int, channels_last: bool):
    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone=backbone, bottleneck_dim=256), shape, 10)
    x = torch.rand(batch, *shape)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        model(x)[0].sum().backward()
        opt.step()
        opt.zero_grad()

    return step


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for backbone, shape, batch in CASES:
        steps = {cl: step_fn(backbone, shape, batch, cl) for cl in (False, True)}
        samples: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(ROUNDS):  # interleaved: a slow spell of the machine hits both formats
            for cl, step in steps.items():
                samples[cl].append(1000 * time_per_call(step, 3, 10))
        ms = {cl: statistics.median(v) for cl, v in samples.items()}
        rows.append({"backbone": backbone, "input": "x".join(map(str, shape)), "batch": batch,
                     "nchw_ms": round(ms[False], 1), "nhwc_ms": round(ms[True], 1),
                     "speedup": round(ms[False] / ms[True], 2)})  # fmt: skip
        print(rows[-1], flush=True)
    print_table(rows, list(rows[0]))
    write_result("cpu-memory-format", {"threads": 1, "rounds": ROUNDS, "iters": 10, "rows": rows})


if __name__ == "__main__":
    main()
