#!/usr/bin/env bash
# Everything a GPU session checks, in one call of the device tool (see bench/README or the
# README's performance section). Run from the repository root with the wheels in .whl/:
#   bash bench/device_check.sh OUT_DIR
# Each stage runs even when an earlier one failed; logs and JSON land in OUT_DIR.
set -u
OUT=${1:-bench/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/platform:${PYTHONPATH:-} HF_HUB_OFFLINE=1
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 RAY_TRAIN_V2_ENABLED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, torchvision, ray, timm; print(torch.__version__, torchvision.__version__, ray.__version__, timm.__version__)"
echo "== dann";  timeout 330 python3 bench/gpu_dann.py --out-dir "$OUT" 2>&1 | grep -v Warning | tail -25
echo "== decode"; timeout 60 python3 bench/gpu_decode.py --out-dir "$OUT" 2>&1 | tail -8
echo "== loop";  timeout 120 python3 -m shiftray.cli run bench/jobs/gpu-loop.yaml --quiet 2>&1 | tail -15
cp /tmp/shiftray-gpu-runs/gpu-loop/result.json "$OUT/gpu-loop-result.json" 2>/dev/null
