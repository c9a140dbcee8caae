#!/usr/bin/env bash
# GPU checks, run on a CUDA machine from a checkout (no network needed; numpy + cupy + pytest):
#   OUT=/some/dir bash benchmarks/gpu_check.sh
# 1. the fused-kernel, loss, optimizer and training tests on the GPU (what the kernels issue needs
#    first, so a slow fresh CuPy kernel cache cannot starve them), with the deferred device checks
#    and the no-host-read training step (tests/test_deferred_checks.py), then those checks again
#    under GPUGRAD_CHECKS=sync (every check read at once),
# 2. the fused-kernel benchmarks against copy bandwidth, CuPy composition and torch,
# 3. training on CUDA and CPU-vs-CUDA parity,
# 4. the rest of the test suite on the GPU (every device-parametrized test also runs on "cuda";
#    not the CPU emulator tier, tests/cuda_emulator, which CI runs and which needs no GPU),
# 5. `gpugrad bench` side by side,
# 6. gg.compile on the GPU: its tests (replayed through CUDA graphs, the default), then compiled
#    vs eager step times with and without graphs (benchmarks/bench_cuda_graph.py, which also
#    checks that the three give the same losses bit for bit).
# Test names are printed as they pass (-v), so a step cut short by its timeout still shows how far
# it got. Everything printed goes to one log, $OUT/gpu_check.log; results as JSON (and a PNG)
# beside it: at most 6 files, so they all come back from a device machine that returns only 8.
# Budget: about 7 minutes on an H100; each step has its own timeout (worst case 700 s together:
# the compile steps come last but one, so a cut-short run still reports everything before them).
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
CORE=(tests/test_fused.py tests/test_deferred_checks.py tests/test_losses.py
      tests/test_loss_options.py tests/test_optim.py tests/test_optim_options.py
      tests/test_training.py tests/test_dropout.py tests/test_multi_gpu.py
      tests/test_cuda_probe.py)
PYTEST=("$PY" -m pytest -p no:cacheprovider -vv --tb=short --durations=10)  # -vv: -q is in addopts
# Device-parametrized tests run their "cuda" case only: CI runs the CPU cases on every push,
# and a fresh machine spends its minutes compiling CuPy kernels.
export GPUGRAD_TEST_DEVICES=cuda
step tests_core 150 "${PYTEST[@]}" "${CORE[@]}"
step checks_sync 25 env GPUGRAD_CHECKS=sync "${PYTEST[@]}" tests/test_deferred_checks.py
step kernels 90 "$PY" benchmarks/bench_kernels.py --json "$OUT/kernels.json"
step train_cuda 45 "$PY" -m gpugrad train --device cuda --no-progress
step parity 40 "$PY" -m gpugrad train --parity --json "$OUT/parity.json"
# test_kernels_compile (NVRTC, no GPU needed) and the emulator tier run in CI: not here
COMPILE=(tests/test_compile.py tests/test_compile_errors.py tests/test_compile_graphs.py)
step tests_rest 140 "${PYTEST[@]}" tests "${CORE[@]/#/--ignore=}" "${COMPILE[@]/#/--ignore=}" \
    --ignore=tests/cuda_emulator --ignore=tests/test_kernels_compile.py
plot_args=()  # --plot needs matplotlib (an optional extra): ask for the PNG only where it exists
"$PY" -c 'import matplotlib' 2>/dev/null && plot_args=(--plot "$OUT/bench.png")
step compile_gpu 90 "${PYTEST[@]}" "${COMPILE[@]}"
step graphs_bench 40 "$PY" benchmarks/bench_cuda_graph.py --repeats 30 --json "$OUT/graphs.json"
step bench 50 "$PY" -m gpugrad bench --quick --devices cpu,cuda --against torch \
    --json "$OUT/bench.json" ${plot_args[@]+"${plot_args[@]}"}

if [ ${#failed[@]} -eq 0 ]; then
    echo "gpu_check: all steps passed" | tee -a "$LOG"
else
    echo "gpu_check: FAILED steps: ${failed[*]}" | tee -a "$LOG"
    exit 1
fi
