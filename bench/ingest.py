"""Ray Data ingest rate vs the rate training consumes (CPU), on the real digits data.

For two layouts of MNIST -> USPS as Parquet shards (1,000 rows each):

- ``floats``: 28x28 float inputs (what ``shiftray data prepare digits`` writes), LeNet DANN;
- ``jpeg``:   32x32 RGB JPEG bytes decoded in the worker, LeNet DANN.

it measures, in one process with one torch thread:

1. ingest:   `StreamPairing.batch` alone (Ray Data read + window shuffle + decode, on the
   calling thread, after 5 warm-up steps; epoch restarts included), images/s;
2. consume:  the training loop's steady-state rate on the same data held in memory, images/s;
3. streamed: the training loop's steady-state rate when it streams (data.stream.enabled), with
   the default read-ahead (``data.stream.read_ahead``: steps read and decoded on a background
   thread) and with none (``read_ahead: 0``: read on the training thread).

The bar: ingest >= 1.2x consume (the stream never starves training).

    python bench/ingest.py [--steps 300]

Writes bench/results/cpu-ingest.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402
from shiftray.cli import main as cli  # noqa: E402
from shiftray.config.load import load_spec  # noqa: E402
from shiftray.data.batches.stream import StreamPairing, load_stream_data, make_datasets  # noqa: E402
from shiftray.data.table import write_table  # noqa: E402
from shiftray.tracking import read_metrics  # noqa: E402
from shiftray.train.launch import ensure_ray, fit_local  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BATCH = 64  # per domain, as the digits jobs


def jpeg_shards(out: Path) -> None:
    """Digits at 32x32 RGB as JPEG bytes (quality 95), with the encoded-image metadata."""
    import torch
    from shiftray.data.readers.digits import Digits
    from torchvision.io import encode_jpeg

    opts = Digits.Options(image_size=32, channels=3)
    for domain in ("mnist", "usps"):
        for split in ("train", "test"):
            a = Digits.read(domain, split, opts)
            u8 = torch.from_numpy((a.x * 255).round().astype(np.uint8))
            blobs = [encode_jpeg(img, quality=95).numpy().tobytes() for img in u8]
            meta = {
                b"shiftray.input_shape": json.dumps([3, 32, 32]).encode(),
                b"shiftray.classes": json.dumps(Digits.class_names(opts)).encode(),
                b"shiftray.input_encoding": b"image",
            }
            table = pa.table(
                {"input": pa.array(blobs, pa.binary()), "label": pa.array(a.y, pa.int64()),
                 "domain": [domain] * len(a), "split": [split] * len(a)}
            ).replace_schema_metadata(meta)  # fmt: skip
            write_table(table, out, domain, split, 1000)


def steady_images_per_s(run_dir: Path) -> float:
    rates = [r["steps_per_s"] for r in read_metrics(run_dir) if "steps_per_s" in r][1:]
    return statistics.median(rates) * 2 * BATCH


def ingest_images_per_s(spec, steps: int) -> float:
    data, paths = load_stream_data(spec)
    ds = make_datasets(paths)
    st = spec.data.stream
    pairing = StreamPairing(
        {k: v.iterator() for k, v in ds.items()}, data.stream, BATCH, 0, 0, 1,
        st.shuffle_buffer, st.prefetch_batches, st.decode_threads, read_ahead=0,
    )  # fmt: skip
    # read on this thread (no read-ahead): a read-ahead queue filled during the warm-up would
    # hand the first timed steps over for free. Ray Data's own prefetch still runs, so this is
    # the pipeline's rate with reads and decoding taking turns: a lower bound
    for s in range(5):
        pairing.batch(s)
    t = time.perf_counter()
    for s in range(5, 5 + steps):
        pairing.batch(s)
    rate = 2 * BATCH * steps / (time.perf_counter() - t)
    pairing.close()
    return rate


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    assert cli(["data", "prepare", "digits", "-o", "image_size=28", "--out", str(tmp / "floats"),
                "--shard-rows", "1000"]) == 0  # fmt: skip
    jpeg_shards(tmp / "jpeg")
    ensure_ray()
    rows = []
    for layout in ("floats", "jpeg"):
        over = [
            "data.benchmark=parquet", f"data.options={{path: {tmp / layout}}}", "tracking.wandb=disabled",
            f"train.steps={args.steps}", "train.log_every=50", f"train.eval_every={args.steps}",
            f"train.checkpoint_every={args.steps}", "resources.torch_threads=1",
            "data.stream.decode_threads=2", f"tracking.output_dir={tmp / 'runs'}",
        ]  # fmt: skip
        memory = load_spec(
            ROOT / "jobs/digits/mnist-usps-dann.yaml", [*over, f"name={layout}-memory"]
        )
        streamed = load_spec(ROOT / "jobs/digits/mnist-usps-dann.yaml",
                             [*over, f"name={layout}-stream", "data.stream.enabled=true"])  # fmt: skip
        ingest = ingest_images_per_s(streamed, args.steps)
        consume = steady_images_per_s(fit_local(memory).run_dir)
        stream_train = steady_images_per_s(fit_local(streamed).run_dir)
        sync = load_spec(ROOT / "jobs/digits/mnist-usps-dann.yaml",
                         [*over, f"name={layout}-sync", "data.stream.enabled=true",
                          "data.stream.read_ahead=0"])  # fmt: skip
        sync_train = steady_images_per_s(fit_local(sync).run_dir)
        rows.append({"layout": layout, "ingest_img_s": round(ingest), "consume_img_s": round(consume),
                     "streamed_train_img_s": round(stream_train),
                     "read_ahead": streamed.data.stream.read_ahead,
                     "no_read_ahead_img_s": round(sync_train),
                     "read_ahead_gain": round(stream_train / sync_train, 2),
                     "ingest_vs_consume": round(ingest / consume, 2),
                     "streamed_vs_memory": round(stream_train / consume, 2)})  # fmt: skip
        print(rows[-1], flush=True)
    print(f"digits mnist->usps, LeNet DANN, {BATCH}+{BATCH} per step, 1 torch thread")
    print_table(rows, list(rows[0]))
    write_result("cpu-ingest", {"steps": args.steps, "batch_per_domain": BATCH, "rows": rows})


if __name__ == "__main__":
    main()
