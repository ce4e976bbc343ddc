#!/usr/bin/env bash
# The GPU paths, checked and measured in one prepared run on a bare NVIDIA machine.
#
#   OUT=gpu-results bash scripts/gpu_check.sh          # all steps, at most 8 minutes (each step has a deadline)
#   OUT=gpu-results bash scripts/gpu_check.sh --short  # correctness and the T = 65536 points only
#
# Runs from the source tree (PYTHONPATH=.) with the machine's own torch and triton; nothing is
# installed. tqdm, pytest and hypothesis are pure Python: on a machine without them and without a
# package registry, copy them in first (`pip install --target .gpu_deps tqdm pytest hypothesis`
# here, then bring .gpu_deps along); the script adds .gpu_deps to the path only when one is missing.
# Every step has a hard time limit and writes its log into $OUT, so a slow step costs only itself.
# Without CUDA it runs the correctness check on the CPU (blocked only) and skips the rest.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
SHORT=${1:-}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 PYTHONUNBUFFERED=1
if ! python -c "import tqdm, pytest, hypothesis" 2>/dev/null && [ -d .gpu_deps ]; then
    export PYTHONPATH="$PYTHONPATH:.gpu_deps"
fi

# step NAME SECONDS COMMAND...: run with a deadline, log to $OUT/NAME.log, echo the tail
step() {
    local name=$1 limit=$2 start rc
    shift 2
    echo "== $name (at most ${limit} s): $*"
    start=$(date +%s)
    timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    tail -n 60 "$OUT/$name.log"
    echo "== $name: exit $rc after $(( $(date +%s) - start )) s$([ $rc = 124 ] && echo ' (time limit)')"
    echo
}

step env 60 python -c "
import importlib.util, platform, torch
print('python', platform.python_version(), '| torch', torch.__version__, '| cuda', torch.version.cuda)
print('gpu:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')
for m in ('triton', 'tqdm', 'pytest', 'hypothesis', 'matplotlib'):
    spec = importlib.util.find_spec(m)
    print(m, (__import__(m).__version__ if hasattr(__import__(m), '__version__') else 'present') if spec else 'MISSING')
"
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    step check 120 python scripts/gpu_check.py --device cpu --quick --json "$OUT/check.json"
    echo "no CUDA GPU: the CUDA steps are skipped"
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1

step check 110 python scripts/gpu_check.py --device cuda --json "$OUT/check.json"

COMMON=(--device cuda --window 256 --heads 16 --head-dim 64 --globals 2 --repeats 5 --warmup 2 --max-gb 60)
FWD=dense,flex_mask,hybrid:blocked,hybrid:flex,hybrid:triton,hybrid:auto
if [ "$SHORT" = "--short" ]; then
    step forward_bf16 150 python -m tutor bench "${COMMON[@]}" --dtype bfloat16 --T 65536 --impls "$FWD" \
        --csv "$OUT/forward_bf16.csv"
    step train_bf16 150 python -m tutor bench --mode train "${COMMON[@]}" --dtype bfloat16 --T 65536 \
        --impls dense,blocked:lean,flex_mask,hybrid:flex,hybrid:triton --csv "$OUT/train_bf16.csv"
    exit 0
fi

step forward_bf16 140 python -m tutor bench "${COMMON[@]}" --dtype bfloat16 --T 16384 65536 131072 \
    --impls "$FWD" --csv "$OUT/forward_bf16.csv"
step forward_fp16 50 python -m tutor bench "${COMMON[@]}" --dtype float16 --T 65536 --impls "$FWD" \
    --csv "$OUT/forward_fp16.csv"
step train_bf16 140 python -m tutor bench --mode train "${COMMON[@]}" --dtype bfloat16 --T 16384 65536 \
    --impls dense,blocked:autograd,blocked:lean,flex_mask,hybrid:flex,hybrid:triton,hybrid:auto \
    --csv "$OUT/train_bf16.csv"
if python -c "import pytest, hypothesis" 2>/dev/null; then
    step pytest 50 python -m pytest -p no:cacheprovider -o addopts="" -q -x \
        tests/attention/test_attention_dtypes.py tests/attention/test_backends.py
else
    echo "== pytest: skipped (pytest or hypothesis missing and no .gpu_deps)"
fi
