#!/usr/bin/env bash
# The GPU check of the training-throughput benchmark, prepared for a session that is lent the
# device machine (one call, about 6 minutes on an H100; its image has torch, numpy and tqdm):
#
#     device run: bash benchmarks/device_check.sh          (timeout_s 540)
#
# Writes train_throughput_cuda.json (reference loop vs seed-batched fast path, S = 1, 5, 10, with the
# paper-protocol projection) and the log to $OUT, or to reports/bench/ when run elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
out="${OUT:-reports/bench}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.csv"
python3 benchmarks/train_throughput.py --device "${DEVICE:-cuda}" --seeds 1 5 10 --seconds 4 --repeats 2 \
    --out "$out/train_throughput_cuda.json" 2>&1 | tee "$out/train_throughput_cuda.log"
