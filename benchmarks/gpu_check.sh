#!/usr/bin/env bash
# The short GPU check (issue 16), under 5 minutes on one H100/H200, for the times a GPU machine is lent:
#   1. the GPU-only tests (tests/test_gpu.py: resume on the GPU, bf16/channels_last keyed, deterministic reruns)
#   2. the engine's training throughput, whole epochs, capture on and off, against the reference-style loop
#      (benchmarks/train_throughput.py, ResNet-18, CIFAR-shaped, batch 128)
# Everything it prints lands in $OUT (default benchmarks/out/gpu-check); nothing is published by hand.
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--n 20000]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/out/gpu-check
N=20000
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift ;;
    --n) N="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
"$PY" - <<'PY' | tee "$OUT/device.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
PY
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run this on a GPU machine')"
echo "== GPU tests"
"$PY" -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt"
echo "== training throughput (whole epochs)"
"$PY" benchmarks/train_throughput.py --device cuda --arch resnet18 --n "$N" --epochs 2 --repeat 2 \
  --json "$OUT/train_throughput.json" 2>&1 | tee "$OUT/train_throughput.txt"
echo "figures in $OUT"
