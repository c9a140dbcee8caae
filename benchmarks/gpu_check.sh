#!/usr/bin/env bash
# GPU checks, run on a CUDA machine from the repository root (no network needed):
#   OUT=/some/dir bash benchmarks/gpu_check.sh
# 1. the whole test suite on the GPU (every device-parametrized test also runs on "cuda"),
# 2. the fused-kernel benchmarks (JSON + log),
# 3. the other benchmarks (appended below by their owners).
# Logs and JSON go to $OUT; sized to finish in about 6 minutes on an H100.
set -euo pipefail

: "${OUT:?set OUT to the directory for logs and JSON}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
export PYTHONPATH=.

status=0
{
    echo "date: $(date -u +%FT%TZ)"
    python -c 'import platform, numpy; print("python", platform.python_version(), "numpy", numpy.__version__)'
    python -c 'import cupy; print("cupy", cupy.__version__)' || true
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
} 2>&1 | tee "$OUT/machine.log"

# Tests: record the status instead of aborting, so the benchmarks still run.
set +e
timeout 200 python -m pytest -q tests 2>&1 | tee "$OUT/tests.log"
tests_status=${PIPESTATUS[0]}
set -e
echo "tests exit status: $tests_status" | tee -a "$OUT/tests.log"
[ "$tests_status" -eq 0 ] || status=1

set +e
timeout 120 python benchmarks/bench_kernels.py --json "$OUT/kernels.json" 2>&1 | tee "$OUT/kernels.log"
bench_status=${PIPESTATUS[0]}
set -e
echo "bench_kernels exit status: $bench_status" | tee -a "$OUT/kernels.log"
[ "$bench_status" -eq 0 ] || status=1

# ---- other benchmarks: append below this line (e.g. `gpugrad bench ... --json "$OUT/....json"`).
# Keep the total within ~6 minutes on an H100; use the same set +e / PIPESTATUS pattern so one
# failing benchmark does not hide the others.
# CLI and device-comparison benchmarks (owner: CLI/bench). Each step logs "<name> exit status"
# to $OUT/<name>.log; any failure sets the script's exit status.
run_step() {  # run_step NAME TIMEOUT CMD...: tee output to $OUT/NAME.log, keep going on failure
    local name=$1 limit=$2; shift 2
    set +e
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    set -e
    echo "$name exit status: $rc" | tee -a "$OUT/$name.log"
    [ "$rc" -eq 0 ] || status=1
}
run_step info 60 python -m gpugrad info --json "$OUT/info.json"
run_step train_cuda 120 python -m gpugrad train --device cuda --no-progress \
    --json "$OUT/train_cuda.json"
run_step parity 120 python -m gpugrad train --parity --json "$OUT/parity.json"
# --plot needs matplotlib (an optional extra): ask for the PNG only where it is installed.
plot_args=()
python -c 'import matplotlib' 2>/dev/null && plot_args=(--plot "$OUT/bench.png")
run_step bench 240 python -m gpugrad bench --devices cpu,cuda --against torch \
    --json "$OUT/bench.json" ${plot_args[@]+"${plot_args[@]}"}
run_step mlp 150 python benchmarks/bench_mlp.py --json "$OUT/mlp.json"
run_step overhead 60 python benchmarks/bench_overhead.py --json "$OUT/overhead.json"
# ---- end of other benchmarks

echo "gpu_check: tests=$tests_status bench_kernels=$bench_status" | tee "$OUT/summary.log"
exit "$status"
