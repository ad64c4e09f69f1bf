"""`make demo`'s last step: serve the adapted DANN run on the embedded Ray and send it USPS test
images over HTTP.

    python -m shiftray.serving.demo [RUN_DIR]      # default runs/demo/mnist-usps-dann

Prints a few predictions of PNG images (V1 ``{"b64": ...}``), the agreement of the whole USPS
test set's HTTP predictions (V2 FP32 tensors) with the offline predictions of the same
checkpoint, single-request latency, and the drift summary.
"""

from __future__ import annotations

import base64
import io
import sys
import time

import numpy as np


def _png(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _v2(base: str, x: np.ndarray) -> list[int]:
    import requests

    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}], "outputs": [{"name": "index"}]}  # fmt: skip
    r = requests.post(f"{base}/v2/models/digits-dann/infer", json=body, timeout=60)
    r.raise_for_status()
    return r.json()["outputs"][0]["data"]


def main(argv: list[str] | None = None) -> int:
    import requests
    from ray import serve

    from shiftray.config.load import load_spec
    from shiftray.data.loading import load_job_data
    from shiftray.display import print_table
    from shiftray.models.load import resolve_checkpoint
    from shiftray.serving.args import AppArgs
    from shiftray.serving.local import free_port, start
    from shiftray.serving.predictor import Predictor

    argv = sys.argv[1:] if argv is None else argv
    run_dir = argv[0] if argv else "runs/demo/mnist-usps-dann"
    ckpt = resolve_checkpoint(run_dir)
    test = load_job_data(load_spec(ckpt / "spec.yaml")).target_test
    t0 = time.perf_counter()
    port = free_port()
    start(AppArgs(models={"digits-dann": run_dir}), port=port)
    base = f"http://127.0.0.1:{port}"
    print(f"== serving {run_dir} as 'digits-dann' at {base} ({time.perf_counter() - t0:.0f} s "
          "to start Ray Serve)", flush=True)  # fmt: skip
    pick = np.random.default_rng(0).choice(len(test), 6, replace=False)
    body = {"instances": [{"b64": _png(test.x[i, 0])} for i in pick]}
    preds = requests.post(f"{base}/v1/models/digits-dann:predict", json=body, timeout=60).json()
    rows = [{"USPS test #": int(i), "true": str(test.y[i]), "predicted": p["label"],
             "p": f"{max(p['probabilities']):.3f}", "shift_score": f"{p['shift_score']:.2f}",
             "discriminator P(target)": f"{p['target_probability']:.2f}"}
            for i, p in zip(pick, preds["predictions"], strict=True)]  # fmt: skip
    print("PNG images over HTTP (KServe V1, {\"b64\": ...}):")
    print_table(rows, list(rows[0]))
    offline = Predictor(ckpt)(test.x).index
    served = np.concatenate([_v2(base, test.x[i : i + 256]) for i in range(0, len(test), 256)])
    agree = float((served == offline).mean()) * 100
    lat = []
    for i in range(50):
        t = time.perf_counter()
        _v2(base, test.x[i : i + 1])
        lat.append((time.perf_counter() - t) * 1000)
    drift = requests.get(f"{base}/v1/models/digits-dann/drift", timeout=60).json()
    print(f"whole USPS test set over HTTP (Open Inference Protocol V2): {len(test)} images, "
          f"agreement with offline predictions {agree:.2f}%, accuracy "
          f"{(served == test.y).mean() * 100:.2f}%")  # fmt: skip
    print(f"single-image latency over 50 requests: p50 {np.percentile(lat, 50):.1f} ms, "
          f"p99 {np.percentile(lat, 99):.1f} ms")  # fmt: skip
    verdict = "drifted" if drift["drifted"] else "no drift"
    print(f"drift over the last {drift['window']} inputs (USPS test vs USPS training features): "
          f"mean shift_score {drift['mean_shift_score']:.2f}, MMD^2 {drift['mmd2']:.4f}, "
          f"p {drift['p_value']:.3f}: {verdict}")  # fmt: skip
    serve.shutdown()
    return 0 if agree == 100.0 else 1


if __name__ == "__main__":
    sys.exit(main())
