"""The CUDA backend: CuPy, one object per GPU (cupy is imported only inside gpugrad/backend/)."""

from __future__ import annotations

import functools

import cupy
import cupyx
import numpy as np

from . import checks
from .array_ops import ArrayOps

# The dtypes cupyx.scatter_add (atomicAdd) accumulates in CuPy 14.2
_SCATTER_ADD_DTYPES = frozenset(map(np.dtype, ("int32", "int64", "uint32", "uint64", "float16",
                                               "float32", "float64")))


def to_host(array) -> np.ndarray:
    """A NumPy copy of a CuPy array, or of any GPU array CuPy can wrap (DLPack producers and
    ``__cuda_array_interface__`` exporters such as torch or numba arrays)."""
    if not isinstance(array, cupy.ndarray):
        array = cupy.from_dlpack(array) if hasattr(array, "__dlpack__") else cupy.asarray(array)
    checks.note_host_read()
    return cupy.asnumpy(array)


class CupyBackend:
    name = "cupy"
    xp = cupy

    def __init__(self, index: int) -> None:
        self.index = index
        self._cuda_device = cupy.cuda.Device(index)
        self.ops = ArrayOps(self)

    @functools.cached_property  # imported on first use; every fused op asks for it
    def fused(self):
        """The fused ops: the CUDA kernels (``kernels/*.cu``)."""
        from . import fused_cuda

        return fused_cuda

    @functools.cached_property
    def reference(self):
        """The fused ops' array-module reference, run on this GPU when ``GPUGRAD_FUSED=0``."""
        from . import fused_reference

        return fused_reference

    def asarray(self, data, dtype=None):
        """``data`` (host data, or an array of any GPU) as a CuPy array on this GPU."""
        if isinstance(data, cupy.ndarray) and data.device.id != self.index:
            data = cupy.asnumpy(data)  # cross-GPU moves are rare; go through the host
        with self._cuda_device:
            return cupy.asarray(data, dtype=dtype)

    def to_host(self, array) -> np.ndarray:
        """The one way gpugrad reads a GPU's memory: settles its pending device checks first."""
        self.flush_checks()
        return to_host(array)

    def copy_from_host(self, array, host: np.ndarray) -> None:
        """Overwrite the GPU ``array`` with the same-shaped host array ``host`` (one transfer)."""
        with self._cuda_device:
            array.set(host)

    def flush_checks(self) -> None:
        """Raise the first failed deferred check of this GPU (one transfer for all of them)."""
        with self._cuda_device:
            checks.flush(("cuda", self.index), checks.read_cupy)

    def scatter_add(self, target, index, values) -> None:
        """``target[index] += values`` with repeated indices accumulated. One integer array on one
        axis (Embedding, ``x[idx]``) uses the deterministic sort-based kernel (bitwise
        reproducible); other index forms fall back to cupyx.scatter_add's atomics."""
        from . import scatter_cuda

        if scatter_cuda.scatter_add(target, index, values):
            return
        if target.dtype not in _SCATTER_ADD_DTYPES:
            kinds = ", ".join(sorted(map(str, _SCATTER_ADD_DTYPES)))
            raise TypeError(f"scatter_add: on the GPU only {kinds} can be accumulated "
                            f"(cupyx.scatter_add, CuPy 14), got {target.dtype} (the gradient of "
                            f"indexing a {target.dtype} tensor of shape {target.shape} with "
                            "repeated indices); cast the tensor to float32 first")
        cupyx.scatter_add(target, index, values)

    def erf(self, x):
        import cupyx.scipy.special

        y = cupyx.scipy.special.erf(x)
        # CuPy's erf has no float16 loop ('e->d'): keep a float input's dtype, as the CPU does.
        return y.astype(x.dtype) if x.dtype.kind == "f" and y.dtype != x.dtype else y

    def from_dlpack(self, obj):
        with self._cuda_device:
            return cupy.from_dlpack(obj)

    def synchronize(self) -> None:
        self._cuda_device.synchronize()
        self.flush_checks()

    def use(self):
        """Context manager making this GPU current (CuPy allocates and launches there). One cached
        ``cupy.cuda.Device``: CuPy keeps the previous devices on a per-thread stack, so the same
        object may be entered again, nested or from several threads. Use ``Device.activate()``."""
        return self._cuda_device

    def device_name(self) -> str:
        props = cupy.cuda.runtime.getDeviceProperties(self.index)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)

    def total_memory(self) -> int:
        return int(cupy.cuda.runtime.getDeviceProperties(self.index)["totalGlobalMem"])
