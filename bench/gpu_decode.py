"""Decode speed of encoded images: batched nvjpeg on the GPU vs the CPU thread pool.

Generates ``--n`` JPEGs (``--width`` x ``--height``, smooth colour fields plus texture, encoded
at quality 90), decodes them with `shiftray.data.images.decode_batch` on each device to
``--size`` px, checks the two agree (mean absolute difference on [0, 1] pixels) and prints
images/s. Writes bench/results/decode-<device>-<date>.json.

    python bench/gpu_decode.py                 # cuda if present, and cpu
    python bench/gpu_decode.py --n 64          # quick
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
from common import RESULTS, print_table  # noqa: E402
from shiftray.data.images import decode_batch  # noqa: E402


def make_jpegs(n: int, width: int, height: int) -> list[bytes]:
    from torchvision.io import encode_jpeg

    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(
        torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij"
    )
    out = []
    for _ in range(n):
        a = torch.rand(3, 3, generator=g)
        img = a[:, :1, None] * xx + a[:, 1:2, None] * yy + a[:, 2:, None] * (xx * yy)
        img = img / img.amax() * 0.8 + 0.2 * torch.rand(3, height, width, generator=g)
        out.append(
            encode_jpeg((img.clamp(0, 1) * 255).to(torch.uint8), quality=90).numpy().tobytes()
        )
    return out


def rate(
    blobs: list[bytes], size: int, device: str, batch: int, threads: int
) -> tuple[float, torch.Tensor]:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    first = decode_batch(blobs[:batch], size, device, threads)  # warm-up (nvjpeg handles, pool)
    sync()
    t = time.perf_counter()
    for i in range(0, len(blobs), batch):
        decode_batch(blobs[i : i + batch], size, device, threads)
    sync()
    return len(blobs) / (time.perf_counter() - t), first.cpu()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args()
    blobs = make_jpegs(args.n, args.width, args.height)
    devices = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    rows, firsts = [], {}
    for d in devices:
        r, firsts[d] = rate(blobs, args.size, d, args.batch, args.threads)
        rows.append(
            {
                "device": d,
                "images_per_s": round(r, 1),
                "threads": args.threads if d == "cpu" else "",
            }
        )
    payload: dict = {
        "n": args.n,
        "source_px": [args.width, args.height],
        "size": args.size,
        "rows": rows,
    }
    if "cuda" in firsts:
        diff = (firsts["cuda"] - firsts["cpu"]).abs()
        payload["gpu_vs_cpu_mean_abs_diff"] = round(float(diff.mean()), 5)
        payload["gpu_vs_cpu_max_abs_diff"] = round(float(diff.max()), 5)
        payload["speedup"] = round(rows[0]["images_per_s"] / rows[1]["images_per_s"], 2)
        payload["card"] = torch.cuda.get_device_name()
    print_table(rows, ["device", "images_per_s", "threads"])
    print({k: v for k, v in payload.items() if k != "rows"})
    slug = re.sub(r"[^a-z0-9]+", "-", payload.get("card", "cpu").lower()).strip("-")
    out = Path(args.out_dir) / f"decode-{slug}-{datetime.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
