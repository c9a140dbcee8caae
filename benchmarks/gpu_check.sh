#!/usr/bin/env bash
# GPU checks, run on a CUDA machine from a checkout (no network needed; numpy + cupy + pytest):
#   OUT=/some/dir bash benchmarks/gpu_check.sh
# 1. the whole test suite on the GPU (every device-parametrized test also runs on "cuda"),
# 2. the fused-kernel benchmarks against copy bandwidth, CuPy composition and torch,
# 3. training on CUDA, CPU-vs-CUDA parity, and `gpugrad bench` side by side.
# Everything printed goes to one log, $OUT/gpu_check.log; results as JSON (and a PNG) beside it:
# at most 7 files, so they all come back from a device machine that returns only 8.
# Budget: about 6 minutes on an H100 (each step has its own timeout; worst case ~9.5 minutes).
set -uo pipefail

: "${OUT:?set OUT to the directory for logs and JSON}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
export PYTHONPATH=. PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}  # the GPU image names its interpreter python3
LOG="$OUT/gpu_check.log"
: >"$LOG"
failed=()

step() {  # step NAME TIMEOUT CMD...: run, append output to the log, remember failures
    local name=$1 limit=$2; shift 2
    echo "==== $name: $* (timeout ${limit}s)" | tee -a "$LOG"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "==== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
    [ "$rc" -eq 0 ] || failed+=("$name")
}

step machine 30 bash -c "date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader; $PY -c 'import platform, numpy, cupy; print(platform.python_version(), \
    numpy.__version__, cupy.__version__)'; $PY -m gpugrad info"
step tests 240 "$PY" -m pytest -p no:cacheprovider --durations=10 tests
step kernels 90 "$PY" benchmarks/bench_kernels.py --json "$OUT/kernels.json"
step train_cuda 45 "$PY" -m gpugrad train --device cuda --no-progress
step parity 60 "$PY" -m gpugrad train --parity --json "$OUT/parity.json"
plot_args=()  # --plot needs matplotlib (an optional extra): ask for the PNG only where it exists
"$PY" -c 'import matplotlib' 2>/dev/null && plot_args=(--plot "$OUT/bench.png")
step bench 120 "$PY" -m gpugrad bench --quick --devices cpu,cuda --against torch \
    --json "$OUT/bench.json" ${plot_args[@]+"${plot_args[@]}"}

if [ ${#failed[@]} -eq 0 ]; then
    echo "gpu_check: all steps passed" | tee -a "$LOG"
else
    echo "gpu_check: FAILED steps: ${failed[*]}" | tee -a "$LOG"
    exit 1
fi
