#!/usr/bin/env bash
# GPU check: the CUDA-marked tests, then one epoch of paper_cnn on CIFAR-shaped synthetic data
# (3x32x32, 50000 images) for bp and usf through asymbp against a plain PyTorch loop (timed even
# when a test fails; the exit status is the tests').
# Run from the repository root on a machine with a CUDA GPU:  bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
"$PY" -m pytest -q -m cuda tests/test_cuda.py
tests=$?
"$PY" benchmarks/epoch_overhead.py --device cuda --channels 3 --size 32 --train-size 50000 \
    --feedback bp usf --repeats 3 2>/dev/null | grep -v "^test_acc="
exit $tests
