"""More reductions: ``var``, ``std``, ``prod``, vector ``norm`` and ``cumsum``, each forward beside
its derivative rule (written with operators and ``ops``, so it also runs on Tensors under
``create_graph=True``).

Imported at the end of ``gpugrad/ops/__init__.py`` (it uses that module's ops).
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..tensor import Tensor
from . import _t, reshape
from . import abs as _abs
from . import max as _max
from . import min as _min
from . import sum as _sum
from .math_extra import float_tensor
from .reductions import expand_reduced, normalize_axis


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


def _count(shape, axes) -> int:
    return math.prod(shape[a] for a in (range(len(shape)) if axes is None else axes))


def _upcast(x):
    """float16 math runs in float32 (sums of squares overflow float16 at |x| ≈ 256)."""
    return x.astype(np.float32) if x.dtype.itemsize < 4 else x


class _Moment(Function):
    """Shared forward of var and std: Σ(x − mean)² / max(N − correction, 0) over ``axes``."""

    def forward(self, x, axes=None, keepdims=False, correction=1):
        self.axes, self.keepdims = axes, keepdims
        self.count = _count(x.shape, axes)
        self.divisor = max(self.count - correction, 0)
        xc = _upcast(x)
        d = xc - self.mean(xc)
        with np.errstate(divide="ignore", invalid="ignore"):  # N <= correction: inf/NaN, as torch
            v = (d * d).sum(axis=axes, keepdims=keepdims) / self.divisor
            return self.finish(v).astype(x.dtype, copy=False)

    def centered(self, x):
        """(x − mean) · 1/divisor on arrays or Tensors (inf/NaN when the divisor is 0)."""
        scale = 1.0 / self.divisor if self.divisor else math.inf
        return (x - self.mean(x)) * scale

    def mean(self, x):
        """The mean over the axes (keepdims), as sum / N: NumPy's mean warns on empty input."""
        total = x.sum(axis=self.axes, keepdims=True)
        return total / self.count if self.count else total


class Var(_Moment):
    """d var / dx = 2 (x − mean) / (N − correction)."""

    save_inputs = (0,)
    def finish(self, v): return v

    def backward(self, ops, g, x):
        g = expand_reduced(g, x.shape, self.axes, self.keepdims)
        return (g * 2 * self.centered(x),)


class Std(_Moment):
    """d std / dx = (x − mean) / ((N − correction) · std); 0 where std = 0 (PyTorch's choice)."""

    save_inputs = (0,)
    save_output = True
    def finish(self, v): return self.xp.sqrt(v)

    def backward(self, ops, g, x, y):
        g = expand_reduced(g, x.shape, self.axes, self.keepdims)
        y = expand_reduced(y, x.shape, self.axes, self.keepdims)
        zero = y == 0
        return (ops.where(zero, 0, g / ops.where(zero, 1, y)) * self.centered(x),)


class Prod(Function):
    """Product over ``axes``. d/dx_i = Π_{j≠i} x_j, computed exactly with zeros present: with no
    zero it is prod / x_i; with one zero it is the product of the others at the zero and 0
    elsewhere; with two or more it is 0 everywhere. Under ``create_graph=True`` with a zero
    present, the products of the others are taken without division (``_others_product``), so
    derivatives of every order are exact there too."""

    save_inputs = (0,)

    def forward(self, x, axes=None, keepdims=False):
        self.axes, self.keepdims = axes, keepdims
        return x.prod(axis=axes, keepdims=keepdims)

    def backward(self, ops, g, x):
        g = expand_reduced(g, x.shape, self.axes, self.keepdims)
        # One host check, in graph mode only: the division-free form costs n times the memory.
        if isinstance(x, Tensor) and x.size and bool((x.data == 0).any()):
            return (g * _others_product(x, self.axes),)
        zero = x == 0
        zeros = zero.sum(axis=self.axes, keepdims=True)
        safe = ops.where(zero, 1, x)
        p = safe.prod(axis=self.axes, keepdims=True)  # the product of the non-zero elements
        others = ops.where(zero, ops.where(zeros == 1, p, 0), ops.where(zeros == 0, p / safe, 0))
        return (g * others,)


def _others_product(x: Tensor, axes) -> Tensor:
    """Π_{j≠i} x_j over ``axes`` for every element i, as differentiable Tensor ops without any
    division: the reduced elements are laid out in a row of n, repeated as an n×n matrix whose
    diagonal is replaced by 1, and ``prod`` takes each row. Its own derivative is again a Prod,
    so every order stays exact with any number of zeros."""
    from . import transpose, unsqueeze, where

    nd = x.ndim
    reduced = tuple(range(nd)) if axes is None else tuple(sorted(axes))
    kept = tuple(a for a in range(nd) if a not in reduced)
    order = kept + reduced
    moved = transpose(x, *order) if order != tuple(range(nd)) else x
    kept_shape = tuple(x.shape[a] for a in kept)
    n = _count(x.shape, reduced)
    rows = reshape(moved, kept_shape + (n,))
    square = unsqueeze(rows, -2) * Tensor._wrap(x.device.xp.ones((n, 1), dtype=x.dtype), x.device)
    eye = Tensor._wrap(x.device.xp.eye(n, dtype=bool), x.device)
    others = prod(where(eye, 1.0, square), axis=-1)
    others = reshape(others, kept_shape + tuple(x.shape[a] for a in reduced))
    inverse = tuple(int(i) for i in np.argsort(order))
    return transpose(others, *inverse) if order != tuple(range(nd)) else others


class Norm2(Function):
    """The Euclidean norm over ``axes``; d/dx = x / norm, and 0 where the norm is 0 (PyTorch)."""

    save_inputs = (0,)
    save_output = True

    def forward(self, x, axes=None, keepdims=False):
        self.axes, self.keepdims = axes, keepdims
        xc = _upcast(x)
        return self.xp.sqrt((xc * xc).sum(axis=axes, keepdims=keepdims)).astype(x.dtype,
                                                                                 copy=False)

    def backward(self, ops, g, x, y):
        g = expand_reduced(g, x.shape, self.axes, self.keepdims)
        y = expand_reduced(y, x.shape, self.axes, self.keepdims)
        zero = y == 0
        return (ops.where(zero, 0, g / ops.where(zero, 1, y)) * x,)


class Cumsum(Function):
    """Running sum along one axis; its gradient is the reversed running sum of ``g``."""

    def forward(self, x, axis=0):
        self.axis = axis
        return self.xp.cumsum(x, axis=axis)

    def backward(self, ops, g):
        a = self.axis
        return (ops.flip(ops.cumsum(ops.flip(g, a), a), a),)


def var(x, axis=None, keepdims: bool = False, *, correction: int = 1) -> Tensor:
    """Variance over ``axis`` dividing by ``N − correction`` (``torch.var``'s ``correction``,
    default 1: unbiased; NumPy's ``ddof`` is the same number). N <= correction gives inf/NaN."""
    x = float_tensor(x, "var")
    return Var.apply(x, axes=axes_of("var", axis, x.shape), keepdims=keepdims,
                     correction=_correction("var", correction))


def std(x, axis=None, keepdims: bool = False, *, correction: int = 1) -> Tensor:
    """Standard deviation: ``sqrt(var(x, axis, keepdims, correction=correction))``."""
    x = float_tensor(x, "std")
    return Std.apply(x, axes=axes_of("std", axis, x.shape), keepdims=keepdims,
                     correction=_correction("std", correction))


def _correction(op: str, correction) -> int | float:
    if isinstance(correction, bool) or not isinstance(correction, (int, float, np.integer)):
        raise TypeError(f"{op}: correction must be a number, got {correction!r}")
    if correction < 0:
        raise ValueError(f"{op}: correction must be >= 0, got {correction}")
    return correction


def prod(x, axis=None, keepdims: bool = False) -> Tensor:
    """Product over ``axis`` (any dtype; the gradient is exact with zeros, see ``Prod``)."""
    x = _t(x)
    return Prod.apply(x, axes=axes_of("prod", axis, x.shape), keepdims=keepdims)


def norm(x, ord=2, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A002 - numpy's name
    """Vector norm over ``axis`` (all elements when None, like ``torch.linalg.vector_norm``):
    ``ord`` 2 (Euclidean), 1 (Σ|x|), ``inf`` (max |x|) or ``-inf`` (min |x|)."""
    x = float_tensor(x, "norm")
    axes = axes_of("norm", axis, x.shape)
    if ord == 2:
        return Norm2.apply(x, axes=axes, keepdims=keepdims)
    if ord == 1:
        return _sum(_abs(x), axis=axes, keepdims=keepdims)
    if ord == math.inf:
        return _max(_abs(x), axis=axes, keepdims=keepdims)
    if ord == -math.inf:
        return _min(_abs(x), axis=axes, keepdims=keepdims)
    raise ValueError(f"norm: ord must be 1, 2, inf or -inf (vector norms), got {ord!r} "
                     f"(tensor shape {x.shape})")


def cumsum(x, axis=None) -> Tensor:
    """Running sum along ``axis``; None runs over the flattened tensor (NumPy's rule)."""
    x = _t(x)
    if axis is None:
        return Cumsum.apply(reshape(x, -1), axis=0)
    a = axis_of("cumsum", axis, x.shape, scalar_axis=True)  # torch: a 0-d tensor has dims 0, -1
    if x.ndim == 0:  # (NumPy refuses any axis)
        return Cumsum.apply(reshape(x, 1), axis=0).reshape(())
    return Cumsum.apply(x, axis=a)
