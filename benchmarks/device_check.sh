#!/usr/bin/env bash
# The GPU check of the training fast path, prepared for a session that is lent the device machine
# (one call, about 9-10 minutes on an H100; with THROUGHPUT=0 it took 4 min 34 s on 2026-11-27, the
# throughput grid 3 min 43 s with SECONDS_PER_CELL=1.5 on 2026-11-26; its image has torch, numpy, tqdm,
# pytest and hypothesis):
#
#     device run: THROUGHPUT=0 bash benchmarks/device_check.sh     (timeout_s 540; the full check does not fit one call)
#
# Steps, in order of what the projection needs most (each has its own timeout; the overlap probe gets what is left
# of DEADLINE_S, default 530 s, and writes its JSON after each repeat):
# 1. benchmarks/compile_probe.py, the compiled bf16 behavior cell (S = 5; 45 of the 61 minutes projected on 2026-11-26) with torch's
#    Mish and with Mish written with one exponential, one process each (~1 minute each; MISH=0 skips).
# 2. tests/test_cuda_graph.py on the GPU: graphed runs equal eager batched runs and single runs (also in
#    TF32 and bf16), a killed graphed run resumes to the same result, behavior and critic side by side give
#    the results of separate runs (CI has no GPU and skips these);
# 3. the training-throughput benchmark on the GPU: reference loop vs the fast path (CUDA graphs) at
#    S = 1, 5, 10, in bf16 at S = 5, 10, without graphs and with TF32 at S = 5; the paper-budget projection
#    (skipped with THROUGHPUT=0: it was measured on 2026-11-26, reports/bench/train_throughput_cuda.json);
# 4. benchmarks/overlap_probe.py: behavior and critic trained side by side on two streams against one after
#    the other, 5 seeds, compiled, the paper profile's precisions (about 2 minutes on 2026-11-27).
# Writes the logs and train_throughput_cuda.json to $OUT, or to reports/bench/ when run elsewhere.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
out="${OUT:-reports/bench}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/nvidia-smi.csv"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
if [ "${MISH:-1}" = 1 ]; then
    for mish in aten one-exp; do
        timeout 150 python3 benchmarks/compile_probe.py --device "${DEVICE:-cuda}" --cells 0 --compiled-only --repeats 3 \
            --mish "$mish" --out "$out/compile_probe_cuda_mish_$mish.json" 2>&1 | grep --line-buffered -v USDT \
            | tee "$out/compile_probe_cuda_mish_$mish.log"
    done
fi
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graph.py 2>&1 | tee "$out/gpu_tests.log"
[ "${THROUGHPUT:-1}" = 1 ] && python3 benchmarks/train_throughput.py --device "${DEVICE:-cuda}" --seeds 1 5 10 --seconds "${SECONDS_PER_CELL:-2}" \
    --repeats 2 --out "$out/train_throughput_cuda.json" 2>&1 | grep --line-buffered -v USDT | tee "$out/train_throughput_cuda.log"
left=$(( ${DEADLINE_S:-530} - SECONDS ))  # `timeout 0` would mean no limit at all: skip instead
if [ "$left" -ge 60 ]; then
    timeout "$left" python3 benchmarks/overlap_probe.py --device "${DEVICE:-cuda}" --out "$out/overlap_probe_cuda.json" 2>&1 \
        | grep --line-buffered -v USDT | tee "$out/overlap_probe_cuda.log"
else
    echo "overlap probe skipped: ${left} s left of DEADLINE_S=${DEADLINE_S:-530}" | tee "$out/overlap_probe_cuda.log"
fi
