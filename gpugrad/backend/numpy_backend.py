"""The CPU backend: NumPy plus the few things the Array API lacks."""

from __future__ import annotations

import contextlib
import math

import numpy as np

from .array_ops import ArrayOps

_erf = np.frompyfunc(math.erf, 1, 1)
_NO_CONTEXT = contextlib.nullcontext()  # stateless: one instance can be entered any number of times


class NumpyBackend:
    name = "numpy"
    xp = np

    def __init__(self) -> None:
        self.ops = ArrayOps(self)

    @property
    def fused(self):
        from . import fused_cpu

        return fused_cpu

    def asarray(self, data, dtype=None) -> np.ndarray:
        return np.asarray(data, dtype=dtype)

    def to_host(self, array) -> np.ndarray:
        return np.asarray(array)

    def scatter_add(self, target: np.ndarray, index, values) -> None:
        np.add.at(target, index, values)

    def erf(self, x: np.ndarray) -> np.ndarray:
        # NumPy has no erf ufunc; math.erf is correctly rounded, and GELU is not a hot path on CPU.
        # np.asarray: on a 0-d input frompyfunc returns a bare Python float, not an array.
        # Integers promote to float64, as NumPy's float ufuncs (and CuPy's erf) do.
        return np.asarray(_erf(x), dtype=x.dtype if x.dtype.kind == "f" else np.float64)

    def from_dlpack(self, obj) -> np.ndarray:
        return np.from_dlpack(obj)

    def synchronize(self) -> None:
        pass

    def use(self):
        """A context manager that does nothing: NumPy has no current device."""
        return _NO_CONTEXT

    def device_name(self) -> str:
        import platform

        return platform.processor() or platform.machine()
