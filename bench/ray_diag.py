"""Why does a Ray Train worker not start here? Prints cluster resources, runs a plain task and a
GPU task with timeouts, and tails the session's error logs. (A device-session diagnostic.)"""

import glob
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "platform"))
from shiftray.train.launch import ensure_ray  # noqa: E402

ensure_ray()
import ray  # noqa: E402

print("resources", ray.cluster_resources(), flush=True)


@ray.remote
def where():
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


for opts in ({}, {"num_gpus": 1}):
    try:
        print(opts, ray.get(where.options(**opts).remote(), timeout=20), flush=True)
    except Exception as e:  # noqa: BLE001
        print(opts, "FAILED", type(e).__name__, str(e)[:300], flush=True)
for f in sorted(glob.glob("/tmp/shiftray-ray/session_latest/logs/*")):
    if f.endswith((".err", ".log")) and os.path.getsize(f) > 0:
        lines = open(f, errors="replace").read().splitlines()
        bad = [
            x for x in lines if any(k in x for k in ("Error", "error", "Traceback", "No module"))
        ]
        if bad:
            print("==", f, *bad[-6:], sep="\n", flush=True)
