#!/usr/bin/env bash
# Everything a GPU session checks, in one call of the device tool (see docs/benchmarks.md).
# Run from the repository root with the wheels in .whl/:
#   bash bench/device_check.sh OUT_DIR
# Each stage runs even when an earlier one failed; logs and JSON land in OUT_DIR, and
# gpu_dann.py rewrites its JSON after every row, so a stage cut off keeps what it measured.
# The stage limits add up to 500 s: the device tool allows 600 s a command and a session has
# about 15 minutes of device time, start-up included.
set -u
OUT=${1:-bench/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/platform:${PYTHONPATH:-} HF_HUB_OFFLINE=1
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 RAY_TRAIN_V2_ENABLED=1
# one inductor cache for the driver and the Ray worker: the worker's compile of the same graph
# is then a cache hit, not a second full compile
export TORCHINDUCTOR_CACHE_DIR=/tmp/shiftray-inductor-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, torchvision, ray, timm; print(torch.__version__, torchvision.__version__, ray.__version__, timm.__version__)"
# full logs go to OUT (a stage killed by its timeout keeps what it printed); the tail here
run() { local name=$1 limit=$2; shift 2; echo "== $name"
        timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; echo "rc=$?"; grep -v Warning "$OUT/$name.log" | tail -20; }
# the row never measured first (the Ray Train worker), then the rest
run dann 380 python3 bench/gpu_dann.py --rows shiftray,ray,reference,supervised,fp32 --out-dir "$OUT"
run decode 40 python3 bench/gpu_decode.py --out-dir "$OUT"
run loop 80 python3 -m shiftray.cli run bench/jobs/gpu-loop.yaml --quiet
cp /tmp/shiftray-gpu-runs/gpu-loop/result.json "$OUT/gpu-loop-result.json" 2>/dev/null
