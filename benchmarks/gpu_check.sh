#!/usr/bin/env bash
# The one command to run on a GPU machine, from a checkout with gpu_bundle/ filled
# by benchmarks/gpu_bundle.sh:
#
#     bash benchmarks/gpu_check.sh OUTDIR
#
# Runs five stages, each under `timeout`, their budgets summing to under 8 minutes
# (INSTALL_BUDGET, ENV_BUDGET, TESTS_BUDGET, EPOCHS_BUDGET, BENCH_BUDGET override them); a failing
# stage does not stop the next:
#   0. install the bundled wheels into /tmp/site (scratchvae runs from this tree,
#              not installed: PYTHONPATH=/tmp/site:$PWD)
#   1. env     the machine: nvidia-smi, Python, CuPy/Numba/PyTorch versions, the device
#   2. tests   python3 -m pytest -m gpu tests, on real CuPy (SCRATCHVAE_GPU_TESTS=cupy)
#   3. epochs  benchmarks/gpu_epoch_check.py: train --device gpu eager and --cuda-graph,
#              and the captured step against the eager one
#   4. bench   benchmarks/bench_gpu.py --out OUTDIR --budget (its budget - 15 s)
# OUTDIR stays flat, at most 8 files: env.txt, gpu_tests.log, gpu_tests.xml,
# gpu_epochs.log, bench_gpu.log, bench_gpu.md, bench_gpu.json, summary.txt. Exits 1 when a stage failed.
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: bash benchmarks/gpu_check.sh OUTDIR" >&2
    exit 2
fi
OUT=$1
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)

# seconds per stage: 40 (install) + 20 (env) + 160 + 70 + 175 = 465, and at most 5 more
# each for a stage killed at its limit: under 8 minutes (on an H200 the stages took
# 4, 9, 135, 26 and 54 s, the epochs of mlp-vae and conv-vae alone: vq-vae's add about
# 20 s; the bench's budget leaves room for torch.compile's twins)
INSTALL_BUDGET=${INSTALL_BUDGET:-40}
ENV_BUDGET=${ENV_BUDGET:-20}
TESTS_BUDGET=${TESTS_BUDGET:-160}
EPOCHS_BUDGET=${EPOCHS_BUDGET:-70}
BENCH_BUDGET=${BENCH_BUDGET:-175}

export ROOT SITE=/tmp/site
export PYTHONPATH=$SITE:$ROOT
export SCRATCHVAE_DATA=$ROOT/gpu_bundle/data SCRATCHVAE_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1

SUMMARY=()
FAILED=0

stage() {   # stage NAME BUDGET LOG COMMAND...: COMMAND (or a function of this script)
    local name=$1 budget=$2 log=$3   # under timeout, its output appended to LOG
    shift 3
    local t0 rc status
    t0=$(date +%s)
    echo "== $name (budget ${budget}s)"
    if declare -F "$1" >/dev/null; then   # timeout runs programs: a function goes through bash
        timeout --kill-after=5 "$budget" bash -c "$(declare -f "$1"); $1" >>"$log" 2>&1
    else
        timeout --kill-after=5 "$budget" "$@" >>"$log" 2>&1
    fi
    rc=$?
    if [ $rc -eq 0 ]; then
        status=ok
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        status="TIMEOUT after ${budget}s"
        FAILED=1
    else
        status="FAILED (exit $rc)"
        FAILED=1
    fi
    SUMMARY+=("$(printf '%-6s %-24s %4ss  %s' "$name" "$status" "$(( $(date +%s) - t0 ))" \
                "$(basename "$log")")")
    echo "   $name: $status"
}

install_wheels() {
    if ! ls "$ROOT"/gpu_bundle/wheels/*.whl >/dev/null 2>&1; then
        echo "error: no wheels in gpu_bundle/wheels: run benchmarks/gpu_bundle.sh first" \
             "(and carry gpu_bundle/ to this machine)"
        return 2
    fi
    python3 -m pip install --quiet --no-index --no-deps --upgrade --target "$SITE" \
        "$ROOT"/gpu_bundle/wheels/*.whl
}

environment() {
    nvidia-smi || echo "nvidia-smi failed"
    python3 - <<'PY'
import sys
print("python", sys.version.replace("\n", " "), sys.executable)
for name in ("numpy", "numba", "numba_cuda", "cupy", "torch", "dask", "distributed", "scipy"):
    try:
        module = __import__(name)
        print(f"{name} {getattr(module, '__version__', '?')} ({module.__file__})")
    except Exception as e:
        print(f"{name}: {type(e).__name__}: {e}")
import cupy
name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
print("cupy device 0:", name.decode() if isinstance(name, bytes) else name,
      "of", cupy.cuda.runtime.getDeviceCount())
from numba import cuda
print("numba.cuda.is_available():", cuda.is_available())
import scratchvae
print("scratchvae from", scratchvae.__file__)
PY
}

stage install "$INSTALL_BUDGET" "$OUT/env.txt" install_wheels
stage env "$ENV_BUDGET" "$OUT/env.txt" environment
stage tests "$TESTS_BUDGET" "$OUT/gpu_tests.log" \
    env SCRATCHVAE_GPU_TESTS=cupy python3 -m pytest -m gpu tests -q -rs -p no:cacheprovider --durations=15 \
    --junitxml="$OUT/gpu_tests.xml"
stage epochs "$EPOCHS_BUDGET" "$OUT/gpu_epochs.log" \
    python3 benchmarks/gpu_epoch_check.py --models mlp-vae conv-vae vq-vae --epochs 2
# the bench skips (and reports) what may not fit in its budget, less 15 s to write up
stage bench "$BENCH_BUDGET" "$OUT/bench_gpu.log" \
    python3 benchmarks/bench_gpu.py --out "$OUT" --budget $((BENCH_BUDGET - 15))

{
    echo "gpu_check.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
    printf '%s\n' "${SUMMARY[@]}"
    tail -n 3 "$OUT/gpu_tests.log" 2>/dev/null | sed 's/^/tests: /'
} | tee "$OUT/summary.txt"
exit $FAILED
