"""What the reference implementations of the fused ops share: the array module of an array, and
the dtype half-precision data is computed in (float32, as the kernels do)."""

from __future__ import annotations

from typing import Any

import numpy as np

NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))  # computed in themselves


def array_module(a: Any) -> Any:
    """``numpy`` for host arrays, ``cupy`` for CuPy arrays (imported only when one is passed)."""
    if isinstance(a, (np.ndarray, np.generic)):
        return np
    import cupy

    return cupy.get_array_module(a)


def compute_dtype(dt: np.dtype) -> np.dtype:
    """float32 and float64 compute in themselves; half types (float16, bfloat16) in float32."""
    return dt if dt in NATIVE_FLOATS else np.dtype(np.float32)


def acc_view(a: Any) -> Any:
    """The array itself for float32/64, else a float32 copy to be written back with ``store``."""
    return a if a.dtype in NATIVE_FLOATS else a.astype(np.float32)


def store(dst: Any, src: Any) -> None:
    if src is not dst:
        dst[...] = src
