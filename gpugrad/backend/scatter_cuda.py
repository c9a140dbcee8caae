"""Deterministic scatter-add on CUDA (``kernels/scatter_add.cu``): ``target[index] += values``
with every repeated index summed in a fixed order, so gradients of integer-array indexing
(Embedding, ``x[idx]``, ``repeat``) are bitwise reproducible, unlike ``cupyx.scatter_add``'s
atomics. Handles one integer array indexing one axis, after any number of full slices; any other
index form (several arrays, booleans) returns False and the caller falls back to atomics.
No host synchronisation: the sort and the kernel are queued like any other op.
"""

from __future__ import annotations

import math

import cupy
import numpy as np

from . import kernels

_THREADS = 256
_MAX_BLOCKS = 4096  # grid-stride beyond this
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64", np.dtype(np.float16): "f16"}


def _suffix(dt: np.dtype) -> str | None:
    return "bf16" if dt.name == "bfloat16" else _SUFFIX.get(dt)


def _axis_and_indices(index, ndim: int):
    """``(axis, integer array)`` for ``index`` = ``idx`` or ``(:, ..., :, idx)``, else None."""
    parts = index if isinstance(index, tuple) else (index,)
    if not parts or len(parts) > ndim:
        return None
    *lead, idx = parts
    if any(not (isinstance(s, slice) and s == slice(None)) for s in lead):
        return None
    if not isinstance(idx, (cupy.ndarray, np.ndarray)) or idx.dtype.kind not in "iu":
        return None
    return len(lead), idx


def scatter_add(target, index, values) -> bool:
    """``target[index] += values`` deterministically; False when this index form or dtype is not
    handled (nothing was done)."""
    found = _axis_and_indices(index, target.ndim)
    sfx = _suffix(target.dtype)
    if found is None or sfx is None or not target.flags.c_contiguous:
        return False
    axis, idx = found
    shape = target.shape
    N = shape[axis]
    P, Q = math.prod(shape[:axis]), math.prod(shape[axis + 1 :])
    M = int(idx.size)
    if M == 0 or target.size == 0:
        return True
    if N * M >= 2**62 or P * M * Q >= 2**62:
        return False
    with target.device:
        rows = cupy.asarray(idx).astype(np.int64, copy=False).reshape(-1)
        rows = cupy.where(rows < 0, rows + N, rows)  # NumPy's negative indices
        # unique keys index * M + position: any correct sort yields the same permutation
        composite = cupy.sort(rows * M + cupy.arange(M, dtype=np.int64))
        keys = composite // M
        order = composite - keys * M
        out_shape = shape[:axis] + tuple(idx.shape) + shape[axis + 1 :]
        vals = cupy.ascontiguousarray(
            cupy.broadcast_to(values, out_shape).astype(target.dtype, copy=False)
        )
        total = P * M * Q
        blocks = max(1, min(-(-total // _THREADS), _MAX_BLOCKS))
        fn = kernels.get_function("scatter_add", f"segment_sum_{sfx}", target.device.id)
        fn((blocks,), (_THREADS,), (keys, order, np.int64(M), vals, target, np.int64(N),
                                    np.int64(P), np.int64(Q)))  # fmt: skip
    return True
