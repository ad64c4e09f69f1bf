"""CPU image decoding: torchcodec vs torchvision.io vs PIL, JPEG and PNG, interleaved rounds.

torchvision 0.29 deprecates its decoders in favour of torchcodec; this measures whether
torchcodec holds on CPU before `shiftray.data.images` moves. Images are made like the tests'
(``make_tree``: 20 px noise with one saturated channel) and like photos at 224 and 500 px
(smooth colour fields plus texture), encoded by PIL (JPEG quality 75, PNG). Each round times every decoder on
every set once, in turn, so a slow spell of the shared machine hits all of them; the table
shows the median images/s over the rounds, per second of the calling thread's CPU time
(``cpu``: what other processes on a shared machine barely change) and of wall time. Rows:

- ``single``: one call per image (what a thread of shiftray's decode pool does)
- ``batched``: ``decode_jpeg(list)`` in one call (JPEG only; both libraries accept lists)
- ``pool``: ``single`` on a thread pool of ``--threads`` (does the decoder release the GIL?)

Every decoder's pixels are compared with torchvision's (max absolute difference, 0..255).
Writes bench/results/cpu-decode.json.

    python bench/decode.py                 # 9 rounds
    python bench/decode.py --rounds 1 --scale 0.1   # quick
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import io
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402
from shiftray.data.images import decode_rgb  # noqa: E402

GPU = (
    "not measured here (no GPU). torchcodec.decoders.decode_jpeg(list, device='cuda') decodes a "
    "batch in one nvJPEG call (its docstring; the wheel bundles libnvjpeg); PNG and the other "
    "formats decode on CPU only, as in torchvision. bench/gpu_decode.py times shiftray's GPU path."
)


def make_images(n: int, size: int, fmt: str) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    out = []
    for i in range(n):
        if size <= 32:  # tests/conftest.py make_tree
            img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            img[..., i % 3] = 220
        else:  # a photo-like image: smooth gradients plus a little noise
            a = rng.random((3, 3))
            f = a[:, 0, None, None] * xx + a[:, 1, None, None] * yy + a[:, 2, None, None] * xx * yy
            f = f / f.max() * 0.85 + 0.15 * rng.random((3, size, size))
            img = (f.transpose(1, 2, 0) * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


def decoders() -> dict[str, Callable[[bytes], torch.Tensor]]:
    """One image's bytes -> uint8 (3, H, W), the way shiftray would call each library
    (torchcodec: `shiftray.data.images.decode_rgb`, what training runs)."""
    import torchvision.io as tio
    from PIL import Image

    def tv(b: bytes) -> torch.Tensor:
        raw = torch.frombuffer(bytearray(b), dtype=torch.uint8)
        return tio.decode_image(raw, mode=tio.ImageReadMode.RGB)

    def pil(b: bytes) -> torch.Tensor:
        with Image.open(io.BytesIO(b)) as im:
            return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)

    return {"torchvision": tv, "torchcodec": decode_rgb, "PIL": pil}


def batched() -> dict[str, Callable[[list[bytes]], list[torch.Tensor]]]:
    import torchcodec.decoders as tc
    import torchvision.io as tio

    def tv(blobs: list[bytes]) -> list[torch.Tensor]:
        raw = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
        return tio.decode_jpeg(raw, mode=tio.ImageReadMode.RGB)

    return {"torchvision": tv, "torchcodec": lambda blobs: tc.decode_jpeg(blobs, mode="RGB")}


def cases(sets: dict, threads: int, pool: ThreadPoolExecutor) -> dict[tuple, Callable]:
    """(set, library, how) -> a function that decodes the whole set once."""
    out = {}
    for key, blobs in sets.items():
        for lib, fn in decoders().items():
            out[(*key, lib, "single")] = lambda fn=fn, blobs=blobs: [fn(b) for b in blobs]
            out[(*key, lib, f"pool {threads}")] = lambda fn=fn, blobs=blobs: list(
                pool.map(fn, blobs)
            )
        if key[1] == "JPEG":
            for lib, fn in batched().items():
                out[(*key, lib, "batched")] = lambda fn=fn, blobs=blobs: fn(blobs)
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", default="20,224,500", help="square image sizes, px")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the images (quick runs)")
    p.add_argument("--out-name", default="cpu-decode", help="bench/results/<name>.json; or a path")
    args = p.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)  # measured here
    count = {20: 2000, 224: 200}  # about 0.1 s of decoding per set; larger sizes: 50
    sets = {
        (size, fmt): make_images(max(4, int(count.get(size, 50) * args.scale)), size, fmt)
        for size in map(int, args.sizes.split(","))
        for fmt in ("JPEG", "PNG")
    }
    with ThreadPoolExecutor(args.threads) as pool:
        todo = cases(sets, args.threads, pool)
        for fn in todo.values():  # warm-up: libraries loaded, pool threads started
            fn()
        wall: dict[tuple, list[float]] = {k: [] for k in todo}
        cpu: dict[tuple, list[float]] = {k: [] for k in todo}
        for _ in range(args.rounds):
            for key, fn in todo.items():
                n = len(sets[key[:2]])
                t, c = time.perf_counter(), time.thread_time()
                fn()
                cpu[key].append(n / max(time.thread_time() - c, 1e-9))
                wall[key].append(n / (time.perf_counter() - t))
    ref = decoders()["torchvision"]
    rows = []
    for key in todo:
        size, fmt, lib, how = key
        med = {m: statistics.median(r[key]) for m, r in (("cpu", cpu), ("wall", wall))}
        base = {m: statistics.median(r[(size, fmt, "torchvision", how)]) for m, r in
                (("cpu", cpu), ("wall", wall))}  # fmt: skip
        fn = decoders()[lib]
        diff = max(int((fn(b).int() - ref(b).int()).abs().max()) for b in sets[(size, fmt)][:20])
        pool = how.startswith("pool")  # the work runs on other threads: no CPU time here
        rows.append({
            "px": size, "format": fmt, "decoder": lib, "how": how,
            "cpu_img_per_s": "" if pool else round(med["cpu"]),
            "cpu_vs_tv": "" if pool else round(med["cpu"] / base["cpu"], 2),
            "wall_img_per_s": round(med["wall"]), "wall_vs_tv": round(med["wall"] / base["wall"], 2),
            "max_abs_diff": diff, "wall_rounds": [round(x) for x in wall[key]],
            "cpu_rounds": [] if pool else [round(x) for x in cpu[key]],
        })  # fmt: skip
    rows.sort(key=lambda x: (x["px"], x["format"], x["how"], x["decoder"]))
    cols = ["px", "format", "how", "decoder", "cpu_img_per_s", "cpu_vs_tv", "wall_img_per_s",
            "wall_vs_tv", "max_abs_diff"]  # fmt: skip
    print_table(rows, cols)
    versions = {k: md.version(k) for k in ("torchcodec", "pillow", "torchvision", "torch")}
    n_images = {f"{k[0]} px {k[1]}": len(v) for k, v in sets.items()}
    write_result(args.out_name, {
        "threads": args.threads, "torch_threads": 1, "n_images": n_images, "libraries": versions,
        "gpu": GPU, "rows": rows,
    })  # fmt: skip


if __name__ == "__main__":
    main()
