"""Serving load benchmark: latency and throughput over loopback HTTP against the direct
in-process model call.

    python bench/serve_load.py [--seconds 6] [--threads 1] [--models effnet,lenet]

Models: EfficientNet-Lite0 at 224 px with its ImageNet weights (+ a 256-d bottleneck and a
10-class head; the forward pass dominates) and the digits LeNet (the small-model case; the
`make demo` DANN run when present). Each is written as a run directory (model.safetensors,
spec.yaml, labels.json, shift.safetensors) and served twice on one embedded Ray: batching on
(``max_batch_size`` 32, 5 ms wait) and off (``max_batch_size`` 1), one model replica with
``--threads`` torch threads. Clients (threads on this machine, one keep-alive session each) send
base64 JPEG (EfficientNet) or PNG (LeNet) images to ``:predict`` for ``--seconds`` per setting,
at concurrency 1, 8 and 32, one image per request ("single") or 8 ("batched request").

The ceiling is the direct call of the same `Predictor` in this process with the same threads on
already-decoded arrays, at the best of batch 1, 2, 4, 8, 16 and 32: on a CPU a larger batch is not
always faster per image (EfficientNet-Lite0 at 224 px slows past batch 4 on this machine's cache).
Batching on serves with ``max_batch_size`` = that best batch (at least 2), unless
``--max-batch-size`` says otherwise: the batch size is a property of the hardware, measured
here. Bounded by --seconds per setting and stops by itself; loopback only.
Writes bench/results/cpu-serve-load.json.
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, time_per_call, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [str(i) for i in range(10)]
BATCHES = (1, 2, 4, 8, 16, 32)


def write_run(run_dir: Path, backbone: str, shape: tuple[int, ...], pretrained) -> Path:
    """A run directory for a model that is not trained here (the weights are what they are)."""
    import json

    import torch
    from safetensors.torch import save_file
    from shiftray.config.load import dump_spec, spec_from_dict
    from shiftray.evaluate.shift import fit_reference, model_features, save_reference
    from shiftray.models.build import build_model

    spec = spec_from_dict({
        "name": run_dir.name, "data": {"benchmark": "synthetic", "source": "a", "target": "b"},
        "model": {"backbone": backbone, "pretrained": pretrained, "bottleneck_dim": 256},
        "method": {"name": "erm"}, "tracking": {"wandb": "disabled"},
    })  # fmt: skip
    torch.manual_seed(0)
    model = build_model(spec.model, shape, len(CLASSES)).eval()
    ckpt = run_dir / "checkpoint_00000000"
    ckpt.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, ckpt / "model.safetensors")
    (ckpt / "spec.yaml").write_text(dump_spec(spec))
    (ckpt / "labels.json").write_text(json.dumps({"classes": CLASSES, "input_shape": list(shape)}))
    logits, feats = model_features(model, torch.rand(64, *shape), 16)
    save_reference(fit_reference(feats, logits), ckpt)
    return run_dir


def encoded(shape: tuple[int, ...], n: int) -> list[str]:
    """n smooth synthetic images (gradients and a disc), JPEG for RGB, PNG for grey, base64."""
    from PIL import Image

    c, s, _ = shape
    yy, xx = np.mgrid[0:s, 0:s] / s
    out = []
    for i in range(n):
        disc = ((xx - 0.3 - 0.04 * i) ** 2 + (yy - 0.5) ** 2 < 0.05).astype(float)
        rgb = np.stack([xx, yy, disc], -1) * 255
        img = Image.fromarray(rgb.astype(np.uint8)).convert("RGB" if c == 3 else "L")
        buf = io.BytesIO()
        img.save(buf, format="JPEG" if c == 3 else "PNG", quality=90)
        out.append(base64.b64encode(buf.getvalue()).decode())
    return out


def direct(run_dir: Path, shape, threads: int) -> dict[str, float]:
    import torch
    from shiftray.serving.predictor import Predictor

    torch.set_num_threads(threads)
    pred = Predictor(run_dir)
    out = {}
    for b in BATCHES:
        x = np.random.default_rng(0).random((b, *shape)).astype(np.float32)
        sec = time_per_call(lambda x=x: pred(x), warmup=2, iters=max(4, 64 // b))
        out[f"b{b}_ms"] = sec * 1000
        out[f"b{b}_per_s"] = b / sec
    best = max(BATCHES, key=lambda b: out[f"b{b}_per_s"])
    out["best_batch"], out["ceiling_per_s"] = best, out[f"b{best}_per_s"]
    return out


def load(url: str, images: list[str], per_request: int, clients: int, seconds: float):
    """Closed-loop clients for ``seconds``: (latencies in ms, status counts, wall seconds)."""
    import requests

    lat: list[float] = []
    codes: dict[int, int] = {}
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client(k: int) -> None:
        s = requests.Session()
        i = k
        while time.monotonic() < stop:
            body = {"instances": [{"b64": images[(i + j) % len(images)]} for j in range(per_request)]}
            t = time.perf_counter()
            r = s.post(url, json=body, timeout=60)
            dt = (time.perf_counter() - t) * 1000
            with lock:
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    lat.append(dt)
            i += per_request

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, codes, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=6.0, help="per setting")
    p.add_argument("--threads", type=int, default=1, help="torch threads (replica and direct)")
    p.add_argument("--models", default="effnet,lenet")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--max-batch-size", type=int, default=0,
                   help="batching on: this max_batch_size (default: the best direct batch, >= 2)")
    p.add_argument("--wait-ms", type=float, default=5.0, help="batch_wait_timeout_s, in ms")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    runs, shapes = {}, {}
    if "effnet" in args.models:
        shapes["effnet"] = (3, 224, 224)
        runs["effnet"] = write_run(tmp / "effnet", "timm/tf_efficientnet_lite0",
                                   shapes["effnet"], "imagenet-package")  # fmt: skip
    if "lenet" in args.models:
        shapes["lenet"] = (1, 28, 28)
        demo = ROOT / "runs/demo/mnist-usps-dann"
        runs["lenet"] = demo if demo.is_dir() else write_run(tmp / "lenet", "lenet", (1, 28, 28), False)
    ceilings = {}
    for m in runs:
        ceilings[m] = direct(runs[m], shapes[m], args.threads)
        print(f"direct {m}: {ceilings[m]}", flush=True)

    import ray
    from ray import serve
    from shiftray.serving.app import build_app
    from shiftray.serving.args import AppArgs
    from shiftray.serving.local import free_port, local_environment, start

    local_environment()
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)  # two apps, four replicas
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rows = []
    for m in runs:
        batch = args.max_batch_size or max(2, ceilings[m]["best_batch"])
        one = {"models": {m: str(runs[m])}, "threads": args.threads, "max_instances": 64}
        on = AppArgs(**one, max_batch_size=batch, batch_wait_timeout_s=args.wait_ms / 1000)
        start(on, port=port, name="on")
        serve.run(build_app(AppArgs(**one, max_batch_size=1)), name="off", route_prefix="/off")
        print(f"serving {m} at {base}: / (max_batch_size {batch}) and /off (1)", flush=True)
        ceilings[m]["served_batch"] = batch
        images = encoded(shapes[m], 16)
        for batching, prefix in (("on", ""), ("off", "/off")):
            url = f"{base}{prefix}/v1/models/{m}:predict"
            load(url, images, 1, 2, 2.0)  # warm-up: model loaded, pools filled
            for per_request in (1, 8):
                for c in (int(x) for x in args.concurrency.split(",")):
                    lat, codes, wall = load(url, images, per_request, c, args.seconds)
                    ok = codes.get(200, 0)
                    rows.append({
                        "model": m, "batching": batching, "per_request": per_request,
                        "concurrency": c, "requests": ok, "errors": sum(codes.values()) - ok,
                        "p50_ms": round(statistics.median(lat), 1) if lat else None,
                        "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat else None,
                        "req_per_s": round(ok / wall, 1),
                        "img_per_s": round(ok * per_request / wall, 1),
                        "x_ceiling": round(ok * per_request / wall / ceilings[m]["ceiling_per_s"], 2),
                    })  # fmt: skip
                    print(rows[-1], flush=True)
        serve.delete("on")
        serve.delete("off")
    serve.shutdown()
    cols = ["model", "batching", "per_request", "concurrency", "requests", "errors", "p50_ms",
            "p99_ms", "req_per_s", "img_per_s", "x_ceiling"]  # fmt: skip
    print_table(rows, cols)
    summary = {}
    for m, ceil in ceilings.items():
        per = ", ".join(f"b{b} {ceil[f'b{b}_per_s']:.1f}" for b in BATCHES)
        print(f"{m} direct (in-process, {args.threads} thread(s)), img/s: {per}; ceiling "
              f"{ceil['ceiling_per_s']:.1f} at batch {ceil['best_batch']}; served with "
              f"max_batch_size {ceil['served_batch']}")  # fmt: skip
        pick = {(r["batching"], r["per_request"], r["concurrency"]): r for r in rows if r["model"] == m}
        top = max(int(x) for x in args.concurrency.split(","))
        on, off, c1 = pick[("on", 1, top)], pick[("off", 1, top)], pick[("on", 1, 1)]
        summary[m] = {
            **{k: round(v, 2) for k, v in ceil.items()}, "wait_ms": args.wait_ms,
            f"on_c{top}_x_ceiling": on["x_ceiling"],
            f"on_vs_off_c{top}": round(on["img_per_s"] / max(off["img_per_s"], 1e-9), 2),
            "p99_c1_ms": c1["p99_ms"], "p99_c1_minus_direct_ms": round(c1["p99_ms"] - ceil["b1_ms"], 1),
        }  # fmt: skip
        print(f"  {m}: batching on, concurrency {top}: {on['x_ceiling']}x the ceiling; "
              f"{summary[m][f'on_vs_off_c{top}']}x batching off; p99 at concurrency 1: "
              f"{c1['p99_ms']} ms = direct single forward + {summary[m]['p99_c1_minus_direct_ms']} ms")
    write_result("cpu-serve-load", {"threads": args.threads, "seconds": args.seconds,
                                    "rows": rows, "summary": summary})  # fmt: skip


if __name__ == "__main__":
    main()
