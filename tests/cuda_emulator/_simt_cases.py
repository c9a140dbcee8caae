"""Shared helpers for the emulator tier: device arrays, unaligned views, dtypes and tolerances."""

from __future__ import annotations

import numpy as np
import pytest
import simt_cupy as cp

from gpugrad.backend import fused_reference

DTYPES = ["float16", "bfloat16", "float32", "float64"]
#: Relative tolerance per storage dtype against the float64 reference: a few ulp of the storage
#: type (float32 math for the half types, whose results are rounded to 10 or 7 mantissa bits).
RTOL = {"float64": 1e-12, "float32": 4e-6, "float16": 2e-3, "bfloat16": 1.6e-2}
ATOL = {"float64": 1e-300, "float32": 1e-30, "float16": 1e-7, "bfloat16": 1e-30}


def np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        if cp.bfloat16 is None:
            pytest.skip("bfloat16 arrays need ml_dtypes (pip install ml_dtypes; test extra)")
        return np.dtype(cp.bfloat16)
    return np.dtype(name)


def dev(a, dtype=None) -> cp.ndarray:
    return cp.asarray(np.asarray(a) if dtype is None else np.asarray(a).astype(dtype))


def dev_unaligned(a, dtype=None) -> cp.ndarray:
    """A C-contiguous device copy of ``a`` starting one element past a 256-byte boundary, so no
    16-byte vector path may be taken for it."""
    host = np.asarray(a) if dtype is None else np.asarray(a).astype(dtype)
    buf = cp.empty(host.size + 1, host.dtype)
    view = buf[1:].reshape(host.shape)
    np.copyto(view.view(np.ndarray), host)
    assert view.data.ptr % 16 != 0
    return view


def host(a) -> np.ndarray:
    return np.asarray(a.get() if isinstance(a, cp.ndarray) else a)


def f64(a) -> np.ndarray:
    return host(a).astype(np.float64)


def assert_close(got, ref, dtype: str, what: str, rtol: float | None = None,
                 cancel: bool = False) -> None:
    """Same NaN and infinity pattern, finite values within the dtype's tolerance. ``cancel``:
    the values are differences of terms of the array's largest magnitude (softmax - one-hot,
    sigmoid - target), so their error is relative to that magnitude."""
    g = f64(got)
    with np.errstate(over="ignore"):  # the reference rounded to the output's storage type
        r = f64(np.asarray(host(ref)).astype(np_dtype(dtype)))
    assert g.shape == r.shape, (what, g.shape, r.shape)
    assert (np.isnan(g) == np.isnan(r)).all(), f"{what}: NaN pattern differs"
    inf = np.isinf(r)
    assert (g[inf] == r[inf]).all() and not np.isinf(g[~inf]).any(), f"{what}: inf differs"
    fin = np.isfinite(r)
    err = np.abs(g[fin] - r[fin])
    mag = np.abs(r[fin])
    if cancel and mag.size:
        mag = np.maximum(mag, mag.max())
    tol = ATOL[dtype] + (RTOL[dtype] if rtol is None else rtol) * mag
    if (err > tol).any():
        i = int(np.argmax(err - tol))
        raise AssertionError(f"{what} ({dtype}): {int((err > tol).sum())} of {err.size} off; "
                             f"worst got {g[fin][i]!r} want {r[fin][i]!r}")  # fmt: skip


def ref64(fn_name: str, *arrays, **kw):
    """The NumPy implementation (fused_reference) in float64 on the same (rounded) inputs."""
    up = [f64(a) if host(a).dtype.kind == "f" or host(a).dtype.name == "bfloat16" else host(a)
          for a in arrays]
    return getattr(fused_reference, fn_name)(*up, **kw)
