"""What every peer server shares: the run directory's `Predictor` with the benchmark's torch
threads, and the Open Inference Protocol V2 JSON tensors in and out (the outputs `shiftray serve`
answers: label, index, probabilities, shift_score, target_probability)."""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np


def peer_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--name", required=True, help="the model's name in /v2/models/{name}/infer")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--max-batch-size", type=int, default=1, help="LitServe only")
    p.add_argument("--batch-timeout", type=float, default=0.005, help="LitServe only, seconds")
    return p.parse_known_args()[0]  # KServe parses sys.argv itself: leave it its flags


def load_predictor(run_dir: str, threads: int):
    import torch
    from shiftray.serving.predictor import Predictor

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    return Predictor(run_dir)


def tensor(body: dict[str, Any]) -> np.ndarray:
    """The one FP32 input tensor of a V2 JSON body (flat or nested data) -> (N, ...) float32."""
    t = body["inputs"][0]
    return np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])


def outputs(classes, out, rows: slice = slice(None)) -> list[dict[str, Any]]:
    """V2 output tensors of a prediction's ``rows``."""
    index = out.index[rows].tolist()
    probs = out.probabilities[rows]
    n = len(index)
    tensors = [
        {"name": "label", "datatype": "BYTES", "shape": [n], "data": [classes[i] for i in index]},
        {"name": "index", "datatype": "INT64", "shape": [n], "data": index},
        {"name": "probabilities", "datatype": "FP32", "shape": list(probs.shape),
         "data": probs.ravel().tolist()},
    ]  # fmt: skip
    for key in ("shift_score", "target_probability"):
        value = getattr(out, key, None)
        if value is not None:
            data = value[rows].tolist()
            tensors.append({"name": key, "datatype": "FP32", "shape": [n], "data": data})
    return tensors
