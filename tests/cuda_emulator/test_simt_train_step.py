"""gpugrad's whole CUDA backend on the CuPy stand-in, in a subprocess (``cupy`` must be the
stand-in before gpugrad is imported): training steps with an Embedding, an MLP, the fused
cross-entropy and fused Adam make no device-to-host read, counted by the backend's hook and by
the stand-in itself; a bad label raises at the next read. Then the device-parametrized deferred
check tests run with device "cuda" on the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]),
                GPUGRAD_TEST_DEVICES="cuda")  # fmt: skip


def test_training_step_makes_no_host_read(prebuilt):
    proc = subprocess.run([sys.executable, str(HERE / "simt_train_step.py")], env=_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["steps"] == [[0, 0], [0, 0]]  # [backend hook, stand-in] reads per step
    assert result["bad_step_reads"] == [0, 0]
    assert result["item_reads"] >= 1 and result["loss"] > 0
    assert result["bad_error"].startswith("cross_entropy: label 99 at row 3")
    # the fused kernels ran, and the Embedding gradient took the deterministic scatter-add
    assert {"ce_small_f32", "adam_step_f32", "segment_sum_f32"} <= set(result["kernels"])


@pytest.mark.parametrize("mode", ["deferred", "sync"])
def test_deferred_check_tests_pass_on_the_emulated_gpu(prebuilt, mode):
    code = ("import sys, simt_train_step, pytest; simt_train_step.install_standin(); "
            "sys.exit(pytest.main(['-p', 'no:cacheprovider', "
            f"{str(ROOT / 'tests' / 'test_deferred_checks.py')!r}]))")  # fmt: skip
    env = dict(_env(), GPUGRAD_CHECKS="sync" if mode == "sync" else "")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    out = proc.stdout + proc.stderr
    skipped = "skipped" in out  # only the no-host-read step, in sync mode
    assert proc.returncode == 0 and " passed" in out and skipped == (mode == "sync"), out[-4000:]
