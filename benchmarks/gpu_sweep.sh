#!/usr/bin/env bash
# GPU sweep throughput (benchmarks/gpu_sweep.py): runs per hour of the paper_table grid on the full
# Fashion-MNIST (LeNet-5, 32 px, 24 epochs) at 1, 4, 8 and 16 runs at a time on one GPU, GPU memory
# per run, and the ratio to the 2-core CPU figure; 3 epochs of N runs per N (about 4 minutes in all
# on an H200, where start-up took 30-45 s per N on 2026-12-04).
# Run from the repository root on a machine with a CUDA GPU:
#   bash benchmarks/gpu_sweep.sh [FASHION_MNIST_DIR]   (default /usr/share/datasets/fashion-mnist)
# Extra arguments after the folder go to gpu_sweep.py (e.g. --full 16: then the whole grid, timed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
ROOT=${1:-/usr/share/datasets/fashion-mnist}
shift || true
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))"
"$PY" benchmarks/gpu_sweep.py --dataset-root "$ROOT" --device cuda --concurrency 1 4 8 16 "$@"
