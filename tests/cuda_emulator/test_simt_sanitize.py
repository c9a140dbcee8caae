"""GPUGRAD_SIMT_SANITIZE=1 (AddressSanitizer + UBSan builds): an out-of-range read, which the
guard bytes cannot see, and a misaligned vector access both abort with the sanitizer's report.
Runs in a subprocess with libasan preloaded (the whole tier can run that way: README)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import simt_build

SRC = r'''
extern "C" __global__ void oob_read(const float* x, float* y, long long n) {
    if (threadIdx.x == 0) y[0] = x[n];
}
struct alignas(16) P4 { float v[4]; };
extern "C" __global__ void misaligned(const float* x, float* y) {
    if (threadIdx.x == 0) y[0] = reinterpret_cast<const P4*>(x + 1)->v[0];
}
'''

SCRIPT = r"""
import sys
import numpy as np
import simt_cupy as cp
mod = cp.RawModule(code=sys.argv[2], name="sanitize_checks.cu")
x, y = cp.zeros(16, np.float32), cp.zeros(1, np.float32)
if sys.argv[1] == "oob_read":
    mod.get_function("oob_read")((1,), (32,), (x, y, np.int64(16)))
else:
    mod.get_function("misaligned")((1,), (32,), (x, y))
print("no report")
"""


def _runtime_libs() -> str | None:
    libs = []
    for name in ("libasan.so", "libubsan.so"):
        out = subprocess.run([simt_build.compiler(), f"-print-file-name={name}"],
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
        if not os.path.isabs(out):
            return None
        libs.append(out)
    return ":".join(libs)


@pytest.mark.parametrize("case,needle", [("oob_read", "AddressSanitizer: heap-buffer-overflow"),
                                         ("misaligned", "misaligned address")])  # fmt: skip
def test_sanitizer_mode_reports(prebuilt, case, needle):
    preload = _runtime_libs()
    if preload is None:
        pytest.skip("g++ has no libasan/libubsan here (Debian: libgcc-12-dev ships them)")
    env = dict(os.environ, GPUGRAD_SIMT_SANITIZE="1", LD_PRELOAD=preload,
               ASAN_OPTIONS="detect_leaks=0", PYTHONPATH=str(Path(__file__).parent))  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", SCRIPT, case, SRC], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode != 0 and needle in proc.stderr, proc.stdout + proc.stderr[-3000:]
