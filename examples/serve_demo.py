"""`make demo`'s last step: serve an adapted digits run on an embedded Ray and send it USPS test
images over HTTP, through the public API (`import shiftray`).

    python examples/serve_demo.py [RUN_DIR]      # default runs/demo/mnist-usps-dann

Prints a few predictions of PNG images (KServe V1 ``{"b64": ...}``), the agreement of the whole
USPS test set's HTTP predictions (Open Inference Protocol V2 FP32 tensors) with the offline
predictions of the same run, single-request latency, and the drift summary. Exits 1 when any
HTTP prediction differs from the offline one.
"""

import base64
import io
import sys
import time
from pathlib import Path

import numpy as np
import requests
import shiftray
from PIL import Image


def png(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def v2(url: str, x: np.ndarray) -> list[int]:
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}], "outputs": [{"name": "index"}]}  # fmt: skip
    r = requests.post(f"{url}/v2/models/digits-dann/infer", json=body, timeout=60)
    r.raise_for_status()
    return r.json()["outputs"][0]["data"]


def table(rows: list[dict]) -> str:
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols), "  ".join("-" * width[c] for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols).rstrip() for r in rows]
    return "\n".join(lines)


def main(run_dir: str) -> int:
    test = shiftray.load_data(shiftray.load_job(Path(run_dir) / "spec.yaml")).target_test
    t0 = time.perf_counter()
    server = shiftray.serve({"digits-dann": run_dir}, port=0, block=False)
    print(f"== serving {run_dir} as 'digits-dann' at {server.url} ({time.perf_counter() - t0:.0f} s "
          "to start Ray Serve)", flush=True)  # fmt: skip
    try:
        pick = np.random.default_rng(0).choice(len(test.y), 6, replace=False)
        body = {"instances": [{"b64": png(test.x[i, 0])} for i in pick]}
        preds = requests.post(f"{server.url}/v1/models/digits-dann:predict", json=body,
                              timeout=60).json()["predictions"]  # fmt: skip
        print('PNG images over HTTP (KServe V1, {"b64": ...}):')
        print(table([{"USPS test #": int(i), "true": str(test.y[i]), "predicted": p["label"],
                      "p": f"{max(p['probabilities']):.3f}", "shift_score": f"{p['shift_score']:.2f}",
                      "discriminator P(target)": f"{p['target_probability']:.2f}"}
                     for i, p in zip(pick, preds, strict=True)]))  # fmt: skip
        offline = shiftray.load(run_dir).predict(test.x).index
        served = np.concatenate([v2(server.url, test.x[i : i + 256])
                                 for i in range(0, len(test.y), 256)])  # fmt: skip
        agree = float((served == offline).mean()) * 100
        lat = []
        for i in range(50):
            t = time.perf_counter()
            v2(server.url, test.x[i : i + 1])
            lat.append((time.perf_counter() - t) * 1000)
        drift = requests.get(f"{server.url}/v1/models/digits-dann/drift", timeout=60).json()
    finally:
        server.stop()
    print(f"whole USPS test set over HTTP (Open Inference Protocol V2): {len(test.y)} images, "
          f"agreement with offline predictions {agree:.2f}%, accuracy "
          f"{(served == test.y).mean() * 100:.2f}%")  # fmt: skip
    print(f"single-image latency over 50 requests: p50 {np.percentile(lat, 50):.1f} ms, "
          f"p99 {np.percentile(lat, 99):.1f} ms")  # fmt: skip
    verdict = "drifted" if drift["drifted"] else "no drift"
    print(f"drift over the last {drift['window']} inputs (USPS test vs USPS training features): "
          f"mean shift_score {drift['mean_shift_score']:.2f}, MMD^2 {drift['mmd2']:.4f}, "
          f"p {drift['p_value']:.3f}: {verdict}")  # fmt: skip
    return 0 if agree == 100.0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs/demo/mnist-usps-dann"))
