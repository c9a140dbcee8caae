"""Helpers the derivative rules share: broadcasting metadata and gradient reduction, axis
normalisation, and casts. They work on arrays and on Tensors alike (graph mode). A leaf module."""

from __future__ import annotations

import numpy as np

from ..tensor import Tensor

_SCALARS = (int, float, bool)


def meta(x):
    """(shape, dtype) of an array operand, or None for a Python scalar."""
    return None if x.__class__ in _SCALARS else (x.shape, x.dtype)


def acc_sum(x, axis=None, keepdims: bool = False):
    """``x.sum(axis, keepdims)``, accumulated in float32 for float16 arrays: NumPy sums float16 in
    float16 along non-contiguous axes (~10% off over 4096 rows). A Tensor (graph mode) goes
    through ``Sum``, which does the same."""
    if x.dtype.itemsize < 4 and x.dtype.kind == "f" and x.__class__ is not Tensor:
        return x.sum(axis=axis, keepdims=keepdims, dtype=np.float32).astype(x.dtype)
    return x.sum(axis=axis, keepdims=keepdims)


def sum_to(g, shape):
    """Sum a broadcast gradient ``g`` down to ``shape`` (works on arrays and Tensors)."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1
    )
    if axes:
        g = acc_sum(g, axis=axes, keepdims=True)
    return g.reshape(shape) if lead or g.shape != shape else g


def reduce_to(g, m):
    """``g`` summed to the operand's shape and cast to its dtype (None for a scalar operand)."""
    if m is None:
        return None
    if g.shape != m[0]:
        g = sum_to(g, m[0])
    if g.dtype != m[1]:
        g = g.astype(m[1])
    return g


def describe(x) -> str:
    return repr(x) if x.__class__ in _SCALARS else f"of shape {x.shape} and dtype {x.dtype}"


def check_broadcast(op: str, a, b) -> None:
    sa = () if a.__class__ in _SCALARS else a.shape
    sb = () if b.__class__ in _SCALARS else b.shape
    for x, y in zip(reversed(sa), reversed(sb)):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"{op}: shapes {sa} and {sb} cannot be broadcast together")


def cast_to(g, dtype):
    """A gradient in its input's dtype (inputs of mixed dtypes meet in one promoted output)."""
    return g if g.dtype == dtype else g.astype(dtype)


def normalize_axis(op: str, axis, ndim: int) -> tuple[int, ...] | None:
    """``axis`` as a sorted tuple of non-negative ints (None means all), validated."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else axis
    if not isinstance(axes, (tuple, list)):
        raise TypeError(f"{op}: axis must be an int or a tuple of ints, got {axis!r}")
    out = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or isinstance(a, bool):
            raise TypeError(f"{op}: axis must be an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < ndim:  # like NumPy: a 0-d tensor has no axis to name
            raise ValueError(f"{op}: axis {a} is out of range for a tensor with {ndim} dims")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def empty_axis(shape, axes) -> int | None:
    """The first reduced axis (``axes`` from normalize_axis; None means all) of length 0."""
    return next((a for a in (range(len(shape)) if axes is None else axes) if shape[a] == 0),
                None)


def check_nonempty(op: str, shape, axes) -> None:
    """max / min / argmax have no identity: refuse a reduction over an axis of length 0 (other
    axes may be empty: max over axis 1 of a (0, 3) tensor is a (0,) tensor)."""
    a = empty_axis(shape, axes)
    if a is not None:
        raise ValueError(f"{op}: cannot reduce over axis {a} of length 0 (tensor shape {shape}, "
                         f"axis={'None' if axes is None else axes})")


def expand_reduced(g, shape, axes, keepdims: bool):
    """Reshape a reduced gradient so it broadcasts against the input's ``shape``."""
    if keepdims or axes is None and g.ndim == len(shape):
        return g
    if axes is None:
        return g.reshape((1,) * len(shape))
    return g.reshape(tuple(1 if i in axes else n for i, n in enumerate(shape)))


def axes_of(op: str, axis, shape) -> tuple[int, ...] | None:
    """``normalize_axis`` whose ``ValueError`` also names the tensor's shape."""
    try:
        return normalize_axis(op, axis, len(shape))
    except ValueError as exc:
        raise ValueError(f"{exc} (tensor shape {tuple(shape)})") from None


def axis_of(op: str, axis, shape, name: str = "axis", scalar_axis: bool = False) -> int:
    """One axis (an int) of a tensor of ``shape``, made non-negative; a tuple, list, None or other
    non-int is a ``TypeError`` naming ``op``, the axis given and the shape. ``scalar_axis``: a 0-d
    tensor has axes 0 and -1 (torch's rule for cumsum, flatten) and 0 is returned."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be a single int, got {axis!r} "
                        f"(tensor shape {tuple(shape)})")
    if scalar_axis and len(shape) == 0:
        if axis not in (0, -1):
            raise ValueError(f"{op}: {name} {axis} is out of range for a 0-d tensor (only 0 "
                             f"and -1 are allowed)")
        return 0
    (a,) = axes_of(op, axis, shape)
    return a
