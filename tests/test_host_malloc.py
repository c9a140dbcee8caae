"""Importing gpugrad sets glibc's malloc so that arrays freed and allocated again every step
reuse their memory instead of being mapped and page-faulted in afresh (backend/host_malloc)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpugrad.backend import host_malloc

ROOT = Path(__file__).resolve().parents[1]
GLIBC = host_malloc.libc_version().startswith("glibc")

# One "step" allocates three 3 MiB arrays and frees them. After a 4 MiB block was mapped and
# freed, glibc's thresholds stand at 4 MiB (mmap) and 8 MiB (trim): the arrays come from the
# heap, and the 9 MiB freed at its top goes back to the OS, to be faulted in again next step.
STEPS = """
import resource
import numpy as np
import gpugrad
from gpugrad.backend import host_malloc
MIB = 1 << 18  # float32 elements
np.ones(4 * MIB, np.float32)
def step():
    arrays = [np.ones(3 * MIB, np.float32) for _ in range(3)]
    del arrays
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
print(host_malloc.state)
"""


def _faults_per_step(**env: str) -> tuple[float, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "GPUGRAD_HOST_MALLOC")}
    done = subprocess.run([sys.executable, "-c", STEPS], capture_output=True, text=True,
                          env={**clean, "PYTHONPATH": str(ROOT), **env}, timeout=120)
    assert done.returncode == 0, done.stderr
    faults, state = done.stdout.strip().split("\n")
    return float(faults), state


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_arrays_are_reused_not_faulted_in_again():
    faults, state = _faults_per_step()
    assert faults < 50 and "mmap threshold 32 MiB" in state, (faults, state)
    # the same steps with glibc's own settings fault in the 9 MiB (2304 pages) every time
    faults, state = _faults_per_step(GPUGRAD_HOST_MALLOC="default")
    assert faults > 1500 and "GPUGRAD_HOST_MALLOC=default" in state, (faults, state)


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}])
def test_settings_from_the_environment_are_left_alone(env):
    faults, state = _faults_per_step(**env)
    assert state == "set by the environment: left as it is" and faults > 1500, (faults, state)


def test_state_is_reported():
    assert host_malloc.configure() == host_malloc.state != "not configured"
    from gpugrad.bench.report import environment_info

    assert environment_info()["devices"][0]["malloc"] == host_malloc.state
