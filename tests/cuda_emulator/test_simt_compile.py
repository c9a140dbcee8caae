"""``gg.compile`` on the CUDA backend, run on the CuPy stand-in with the emulated kernels (in a
subprocess: ``cupy`` must be the stand-in before gpugrad is imported). Compiled steps give eager's
bytes on the emulated GPU too, and a replayed training step makes no device-to-host read -- what a
CUDA-graph capture of the replay will need."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# two of tests/test_compile.py's cases (50 emulated steps each cost ~20 s through the CUDA-graph
# path; test_simt_cuda_graph.py covers the other optimizers, dropout and LR schedules on it): Adam
# with weight decay on both fused paths, and replays that check their own indices
CASES = "optimizers_bitwise and adam-wd or own_indices"

REPLAY_READS = """
import json, simt_cupy, simt_train_step
simt_train_step.install_standin()
import numpy as np
import gpugrad as gg
import gpugrad.functional as F
from gpugrad.backend import checks

dev = gg.device("cuda")
gg.manual_seed(0)
rng = np.random.default_rng(0)
model = gg.nn.MLP([16, 32, 10], dropout=0.1).to(dev)
opt = gg.optim.Adam(model.parameters(), lr=1e-2)
x = gg.tensor(rng.standard_normal((8, 16)).astype(np.float32), device=dev)
y = gg.tensor(rng.integers(0, 10, 8), device=dev)

@gg.compile
def step(x, y):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss

step(x, y)
step(x, y)
gg.cuda.synchronize()
reads = []
for _ in range(3):
    before = (checks.host_reads(), simt_cupy.host_reads)
    loss = step(x, y)
    reads.append([checks.host_reads() - before[0], simt_cupy.host_reads - before[1]])
print(json.dumps({"reads": reads, "traces": step.traces, "loss": loss.item(),
                  "kernels": sorted({name for name, *_ in simt_cupy.launches})}))
"""


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]),
               GPUGRAD_TEST_DEVICES="cuda")
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_compiled_steps_match_eager_on_the_emulated_gpu(prebuilt):
    code = ("import sys, simt_train_step, pytest; simt_train_step.install_standin(); "
            "sys.exit(pytest.main(['-p', 'no:cacheprovider', '-v', "
            f"{str(ROOT / 'tests' / 'test_compile.py')!r}, "
            f"{str(ROOT / 'tests' / 'test_compile_errors.py')!r}, '-k', {CASES!r}]))")
    proc = _run(code)
    out = proc.stdout + proc.stderr
    # Adam on both paths and the index checks, on device "cuda" only (GPUGRAD_TEST_DEVICES); none
    # skipped
    assert proc.returncode == 0 and "3 passed" in out and "skipped" not in out, out[-4000:]


def test_a_replayed_step_reads_nothing_back(prebuilt):
    proc = _run(REPLAY_READS)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["traces"] == 1 and result["loss"] > 0
    assert result["reads"] == [[0, 0]] * 3  # [backend hook, stand-in] reads per replay
    assert {"ce_small_f32", "adam_step_f32"} <= set(result["kernels"])  # the fused kernels ran
