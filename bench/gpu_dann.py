"""ResNet-50 DANN step speed on one GPU (run it through the device tool when a session has one).

In one process on one device, images/s counting source + target:

1. reference: fp32, eager, 32+32 images (how the classic DA libraries run);
2. shiftray:  shiftray's own step (`shiftray.train.step.train_step`) at 128+128 with bf16
   autocast, channels_last and torch.compile (the spec defaults on GPU);
3. ray:       the same step inside a Ray Train worker (TorchTrainer, one worker);
4. supervised: the plain supervised step on the same 256 images, same settings (the ceiling);
5. fp32:      the reference settings at shiftray's batch (how much of the gain is the batch).

DANN here: bottleneck 256, discriminator 1024-1024-1, SGD momentum 0.9 (as in the papers).

    python bench/gpu_dann.py                                   # on a GPU machine
    python bench/gpu_dann.py --rows shiftray,ray               # just the Ray Train ratio
    python bench/gpu_dann.py --device cpu --model test_resnet --image-size 32 --batch 4 \
        --ref-batch 2 --steps 2 --warmup 1 --no-compile       # the CPU smoke test

Writes bench/results/gpu-<card>-<date>.json (or cpu-smoke-<date>.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, print_table, provenance  # noqa: E402
from shiftray.config.schema import ModelSpec  # noqa: E402
from shiftray.data.batches.base import DABatch  # noqa: E402
from shiftray.methods.base import ModelInfo  # noqa: E402
from shiftray.methods.dann import DANN, DANNParams  # noqa: E402
from shiftray.methods.erm import ERM, ERMParams  # noqa: E402
from shiftray.models.build import build_model  # noqa: E402
from shiftray.train.module import TrainModule  # noqa: E402
from shiftray.train.step import StepConfig, compile_network, train_step  # noqa: E402


def measure(args: dict) -> float:
    """Images per second of one configuration (runs in this process or a Ray Train worker)."""
    device = torch.device(args["device"])
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = args["fast"]
    torch.backends.cudnn.allow_tf32 = args["fast"]
    size, b = args["image_size"], args["batch"]
    model = build_model(
        ModelSpec(backbone=f"timm/{args['model']}", bottleneck_dim=256), (3, size, size), 31
    )
    if args["method"] == "dann":
        method = DANN(DANNParams(disc_hidden=[1024, 1024]), ModelInfo(256, 31))
    else:
        method = ERM(ERMParams(), ModelInfo(256, 31))
    module = TrainModule(model, method).to(device)
    cl = args["fast"] and device.type == "cuda" or args["channels_last"]
    if cl:
        module = module.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    cfg = StepConfig(
        autocast_dtype=torch.bfloat16 if args["fast"] else None,
        device_type=device.type,
        channels_last=cl,
    )
    if args["compile"]:
        compile_network(model)  # as the training loop does (train.compile)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2 * b, 3, size, size, generator=gen)
    y = torch.randint(0, 31, (2 * b,), generator=gen)
    if args["method"] == "dann":
        batch = DABatch(x[:b], y[:b], x[b:]).to(device, cl)
    else:
        batch = DABatch(x, y, x[:1]).to(device, cl)  # supervised on all 2b images
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    total = args["warmup"] + args["steps"]  # the progress moves every step, as in training
    for i in range(args["warmup"]):
        train_step(module, opt, batch, i / total, cfg, i)
    sync()
    t = time.perf_counter()
    for i in range(args["warmup"], total):
        train_step(module, opt, batch, i / total, cfg, i)
    sync()
    return 2 * b * args["steps"] / (time.perf_counter() - t)


def measure_in_ray(args: dict) -> float:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from shiftray.train.launch import ensure_ray

    ensure_ray()
    import tempfile

    bench_dir = str(Path(__file__).resolve().parent)
    out = Path(tempfile.mkdtemp()) / "images_per_s.json"

    def loop(config):
        import json
        import sys

        sys.path.insert(0, bench_dir)
        from gpu_dann import measure as measure_in_worker  # this file, imported in the worker

        Path(config["out"]).write_text(json.dumps(measure_in_worker(config)))

    use_gpu = args["device"] == "cuda"
    trainer = TorchTrainer(
        loop, train_loop_config=dict(args, out=str(out)),
        scaling_config=ScalingConfig(num_workers=1, use_gpu=use_gpu, resources_per_worker={"CPU": min(8, os.cpu_count() or 1)}),
        run_config=RunConfig(storage_path=tempfile.mkdtemp(), name="gpu-bench"),
    )  # fmt: skip
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    return float(json.loads(out.read_text()))


ROWS = {  # --rows name -> the row's label
    "reference": "reference fp32 eager",
    "shiftray": "shiftray step",
    "supervised": "supervised step",
    "ray": "shiftray step in Ray Train (1 worker)",
    "fp32": "fp32 eager at shiftray's batch",  # splits the gain: batch size vs the switches
}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default="resnet50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=128, help="per domain, shiftray and supervised")
    p.add_argument("--ref-batch", type=int, default=32, help="per domain, the fp32 reference")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument(
        "--rows", default=",".join(ROWS), help=f"which rows, in this order (of {', '.join(ROWS)})"
    )
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args()
    wanted = args.rows.split(",")
    if unknown := set(wanted) - set(ROWS):
        p.error(f"--rows: unknown {sorted(unknown)}; choose from {', '.join(ROWS)}")
    common = dict(
        device=args.device, model=args.model, image_size=args.image_size, steps=args.steps,
        warmup=args.warmup,
    )  # fmt: skip
    fast = dict(
        common, batch=args.batch, fast=True, compile=not args.no_compile, channels_last=True
    )
    configs = {
        "reference": dict(
            common,
            batch=args.ref_batch,
            fast=False,
            compile=False,
            channels_last=False,
            method="dann",
        ),  # fmt: skip
        "fp32": dict(
            common, batch=args.batch, fast=False, compile=False, channels_last=False, method="dann"
        ),  # fmt: skip
        "shiftray": dict(fast, method="dann"),
        "supervised": dict(fast, method="erm"),
    }
    configs["ray"] = configs["shiftray"]  # the same step, inside a Ray Train worker
    card = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    name = f"gpu-{slug}" if args.device == "cuda" else "cpu-smoke"
    out = Path(args.out_dir) / f"{name}-{datetime.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []

    def save() -> dict:
        """Rewrite the JSON after every row: a run cut off by the device's time limit keeps
        the rows it measured (``complete`` says whether all it was asked for are there)."""
        by = {r["row"]: r["images_per_s"] for r in rows}
        for r in rows:
            if "reference" in by:
                r["vs_reference"] = round(r["images_per_s"] / by["reference"], 2)
        ratios = {}
        for key, num, den in [
            ("shiftray_vs_reference", "shiftray", "reference"),
            ("shiftray_vs_supervised", "shiftray", "supervised"),
            ("ray_vs_bare", "ray", "shiftray"),
            ("shiftray_vs_fp32_same_batch", "shiftray", "fp32"),
        ]:
            if num in by and den in by:
                ratios[key] = round(by[num] / by[den], 3)
        payload = {"date": datetime.date.today().isoformat(), **provenance(), "card": card,
                   "model": args.model, "image_size": args.image_size, "steps": args.steps,
                   "warmup": args.warmup, "compile": not args.no_compile,
                   "complete": len(rows) == len(wanted), "rows": rows, "ratios": ratios}  # fmt: skip
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        tmp.replace(out)
        return ratios

    ratios: dict = {}
    for row in wanted:
        cfg = configs[row]
        ips = measure_in_ray(cfg) if row == "ray" else measure(cfg)
        rows.append({"row": row, "config": ROWS[row], "batch": f"{cfg['batch']}+{cfg['batch']}",
                     "images_per_s": round(ips, 1)})  # fmt: skip
        ratios = save()
        print(rows[-1], flush=True)
    print(f"{args.model} DANN at {args.image_size} px on {card}")
    print_table(rows, ["config", "batch", "images_per_s", "vs_reference"])
    print(ratios)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
