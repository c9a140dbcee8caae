#!/usr/bin/env bash
# GPU checks, run on a CUDA machine from a checkout (no network needed; numpy + cupy + pytest), as
# two commands, each within a device machine's 10-minute limit per command:
#   OUT=/some/dir bash benchmarks/gpu_check.sh part1     # worst case 410 s
#   OUT=/some/dir bash benchmarks/gpu_check.sh part2     # worst case 435 s
#   OUT=/some/dir bash benchmarks/gpu_check.sh all       # both, one after the other
#   bash benchmarks/gpu_check.sh part1 --plan            # list the steps and their timeouts only
# part1: what the kernels issue needs first, so a slow fresh CuPy kernel cache cannot starve it:
#   1. the fused-kernel, loss, optimizer and training tests on the GPU, with the deferred device
#      checks and the no-host-read training step (tests/test_deferred_checks.py), then those
#      checks again under GPUGRAD_CHECKS=sync (every check read at once),
#   2. the fused-kernel benchmarks against copy bandwidth, CuPy composition and torch,
#   3. training on CUDA and CPU-vs-CUDA parity.
# part2:
#   4. the rest of the test suite on the GPU (every device-parametrized test also runs on "cuda",
#      every op on every memory layout among them; not the CPU emulator tier, tests/cuda_emulator,
#      nor the CPU benchmark scripts' smoke tests, which CI runs and which need no GPU),
#   5. gg.compile on the GPU: its tests (replayed through CUDA graphs, the default; 40 random
#      programs against eager, bit for bit), then compiled
#      vs eager step times with and without graphs (benchmarks/bench_cuda_graph.py, which also
#      checks that the three give the same losses bit for bit),
#   6. `gpugrad bench` side by side.
# Each part first logs the machine (GPU, driver, versions). Test names are printed as they pass
# (-v), so a step cut short by its timeout still shows how far it got. Everything a part prints
# goes to one log, $OUT/gpu_check_part1.log or $OUT/gpu_check_part2.log; results as JSON (and a
# PNG) beside it: part1 writes kernels.json and parity.json, part2 graphs.json, bench.json and
# bench.png -- at most 7 files for both parts, so they come back from a device machine that
# returns only 8. Each step has its own timeout, and is killed 5 s after it if it ignores the
# signal; a part's worst case is the sum of (timeout + 5 s) over its steps, which
# tests/test_gpu_check_script.py holds to at most 540 s.
set -uo pipefail

usage() {
    echo "usage: OUT=DIR bash benchmarks/gpu_check.sh part1|part2|all [--plan]" >&2
    exit 2
}
[ $# -ge 1 ] && [ $# -le 2 ] || usage
PART=$1
PLAN=0
if [ $# -eq 2 ]; then
    [ "$2" = "--plan" ] || usage
    PLAN=1
fi
case "$PART" in part1 | part2 | all) ;; *) usage ;; esac

KILL_AFTER=5  # seconds between a step's timeout signal and SIGKILL
if [ "$PLAN" -eq 1 ]; then
    OUT=${OUT:-OUT}
else
    : "${OUT:?set OUT to the directory for logs and JSON}"
    mkdir -p "$OUT"
    OUT="$(cd "$OUT" && pwd)"
fi
cd "$(dirname "$0")/.."
export PYTHONPATH=. PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}  # the GPU image names its interpreter python3
LOG=/dev/null
failed=()
planned=0

step() {  # step NAME TIMEOUT CMD...: run, append output to the log, remember failures
    local name=$1 limit=$2; shift 2
    if [ "$PLAN" -eq 1 ]; then  # --plan: "step NAME TIMEOUT" and nothing run
        echo "step $name $limit"
        planned=$((planned + limit + KILL_AFTER))
        return
    fi
    echo "==== $name: $* (timeout ${limit}s)" | tee -a "$LOG"
    local start=$SECONDS
    timeout --kill-after="$KILL_AFTER" "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "==== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
    [ "$rc" -eq 0 ] || failed+=("$name")
}

begin() {  # begin PART: open the part's log and record the machine
    LOG="$OUT/gpu_check_$1.log"
    [ "$PLAN" -eq 1 ] || : >"$LOG"
    step machine 30 bash -c "date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,\
memory.total --format=csv,noheader; $PY -c 'import platform, numpy, cupy; \
print(platform.python_version(), numpy.__version__, cupy.__version__)'; $PY -m gpugrad info"
}

CORE=(tests/test_fused.py tests/test_deferred_checks.py tests/test_losses.py
      tests/test_loss_options.py tests/test_optim.py tests/test_optim_options.py
      tests/test_training.py tests/test_dropout.py tests/test_multi_gpu.py
      tests/test_cuda_probe.py)
# test_kernels_compile (NVRTC, no GPU needed) and the emulator tier run in CI: not here
COMPILE=(tests/test_compile.py tests/test_compile_errors.py tests/test_compile_graphs.py
         tests/test_compile_fuzz.py)
PYTEST=("$PY" -m pytest -p no:cacheprovider -vv --tb=short --durations=10)  # -vv: -q is in addopts
# Device-parametrized tests run their "cuda" case only: CI runs the CPU cases on every push,
# and a fresh machine spends its minutes compiling CuPy kernels.
export GPUGRAD_TEST_DEVICES=cuda

part1() {
    begin part1
    step tests_core 150 "${PYTEST[@]}" "${CORE[@]}"
    step checks_sync 25 env GPUGRAD_CHECKS=sync "${PYTEST[@]}" tests/test_deferred_checks.py
    step kernels 90 "$PY" benchmarks/bench_kernels.py --json "$OUT/kernels.json"
    step train_cuda 45 "$PY" -m gpugrad train --device cuda --no-progress
    step parity 40 "$PY" -m gpugrad train --parity --json "$OUT/parity.json"
}

part2() {
    begin part2
    # 200 s: on a fresh machine running this part alone, CuPy compiles its kernels here first
    step tests_rest 200 "${PYTEST[@]}" tests "${CORE[@]/#/--ignore=}" "${COMPILE[@]/#/--ignore=}" \
        --ignore=tests/cuda_emulator --ignore=tests/test_kernels_compile.py \
        --ignore=tests/test_benchmark_scripts.py
    # gg.compile last but one: a part cut short still reports everything before it
    # 40 random programs (CI runs 300 on the CPU): each trace captures CUDA graphs
    step compile_gpu 90 env GPUGRAD_FUZZ_PROGRAMS=40 "${PYTEST[@]}" "${COMPILE[@]}"
    step graphs_bench 40 "$PY" benchmarks/bench_cuda_graph.py --repeats 30 --json "$OUT/graphs.json"
    local plot_args=()  # --plot needs matplotlib (an optional extra): ask for the PNG only there
    if [ "$PLAN" -eq 0 ] && "$PY" -c 'import matplotlib' 2>/dev/null; then
        plot_args=(--plot "$OUT/bench.png")
    fi
    step bench 50 "$PY" -m gpugrad bench --quick --devices cpu,cuda --against torch \
        --json "$OUT/bench.json" ${plot_args[@]+"${plot_args[@]}"}
}

finish() {  # finish PART: one closing line in the part's log
    if [ "$PLAN" -eq 1 ]; then
        echo "$1: worst case $planned s"
        planned=0
    elif [ ${#failed[@]} -eq 0 ]; then
        echo "gpu_check $1: all steps passed" | tee -a "$LOG"
    else
        echo "gpu_check $1: FAILED steps: ${failed[*]}" | tee -a "$LOG"
    fi
}

case "$PART" in
    part1) part1; finish part1 ;;
    part2) part2; finish part2 ;;
    all) part1; finish part1; failed_part1=("${failed[@]+"${failed[@]}"}"); failed=()
         part2; finish part2; failed+=("${failed_part1[@]+"${failed_part1[@]}"}") ;;
esac
[ ${#failed[@]} -eq 0 ] || exit 1
