"""Reductions with ``axis`` / ``keepdims`` (sum, mean, max, min, logsumexp, var, std, prod, norm,
cumsum, argmax, argmin): each Function's forward beside its derivative rule (written with operators
and ``ops``, so it also runs on Tensors under ``create_graph=True``), then the public wrappers.
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from ..autograd import Function
from ..tensor import Tensor
from ._coerce import as_tensor, float_tensor, floating, untracked_result
from ._rules import (
    acc_sum,
    axes_of,
    axis_of,
    check_nonempty,
    empty_axis,
    expand_reduced,
    normalize_axis,
)
from .elementwise import abs as _abs
from .elementwise import where
from .shape import reshape, transpose, unsqueeze


class Sum(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.shape, self.keepdims = x.shape, keepdims
        self.axes = normalize_axis("sum", axis, x.ndim)
        return acc_sum(x, axis=self.axes, keepdims=keepdims)  # float16 accumulates in float32

    def backward(self, ops, g):
        return (ops.broadcast_to(expand_reduced(g, self.shape, self.axes, self.keepdims),
                                 self.shape),)


class Mean(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.shape, self.keepdims = x.shape, keepdims
        self.axes = normalize_axis("mean", axis, x.ndim)
        axes = range(x.ndim) if self.axes is None else self.axes
        self.count = math.prod(x.shape[a] for a in axes)
        if self.count == 0:  # NaN, as in PyTorch, without NumPy's "Mean of empty slice" warning
            total = x.sum(axis=self.axes, keepdims=keepdims)
            return total / self.xp.asarray(0, dtype=total.dtype if total.dtype.kind in "fc"
                                           else np.float64)
        return x.mean(axis=self.axes, keepdims=keepdims)

    def backward(self, ops, g):
        g = expand_reduced(g, self.shape, self.axes, self.keepdims)
        if g.dtype.itemsize < 4 and g.dtype.kind == "f":
            # float16 would take the count as a float16: inf from 65504 on, so a zero gradient
            scale = 1.0 / self.count if self.count else math.nan  # (an empty input: no grad)
            g = (g.astype(np.float32) * scale).astype(g.dtype)
        else:
            g = g / self.count
        return (ops.broadcast_to(g, self.shape),)


class _Extremum(Function):
    """max / min: the gradient is split evenly between tied extrema (deterministic)."""

    save_inputs = (0,)
    save_output = True

    def forward(self, x, axis=None, keepdims=False):
        name = type(self).__name__.lower()
        self.axes, self.keepdims = normalize_axis(name, axis, x.ndim), keepdims
        check_nonempty(name, x.shape, self.axes)
        return self.reduce(x, axis=self.axes, keepdims=keepdims)

    def backward(self, ops, g, x, y):
        y = expand_reduced(y, x.shape, self.axes, self.keepdims)
        g = expand_reduced(g, x.shape, self.axes, self.keepdims)
        hit = x == y
        count = hit.sum(axis=self.axes, keepdims=True).astype(g.dtype)
        return (ops.where(hit, g / count, 0),)


class Max(_Extremum):
    def reduce(self, x, **kw): return x.max(**kw)


class Min(_Extremum):
    def reduce(self, x, **kw): return x.min(**kw)


class LogSumExp(Function):
    save_inputs = (0,)
    save_output = True

    def forward(self, x, axis=None, keepdims=False):
        self.axes, self.keepdims = normalize_axis("logsumexp", axis, x.ndim), keepdims
        xp = self.xp
        if empty_axis(x.shape, self.axes) is not None:  # an empty sum: log(0) = -inf (torch's)
            out = xp.full(tuple(1 if self.axes is None or i in self.axes else n
                                for i, n in enumerate(x.shape)), -math.inf, dtype=x.dtype)
            return out if keepdims else out.reshape(
                () if self.axes is None else tuple(n for i, n in enumerate(x.shape)
                                                   if i not in self.axes))
        m = x.max(axis=self.axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)  # all -inf (or inf) rows: keep exp well defined
        with np.errstate(divide="ignore"):  # an all -inf row sums to 0: log gives -inf, quietly
            out = xp.log(xp.exp(x - m).sum(axis=self.axes, keepdims=True)) + m
        return out if keepdims else out.reshape(
            () if self.axes is None else tuple(n for i, n in enumerate(x.shape)
                                               if i not in self.axes))

    def backward(self, ops, g, x, y):
        y = expand_reduced(y, x.shape, self.axes, self.keepdims)
        g = expand_reduced(g, x.shape, self.axes, self.keepdims)
        return (g * ops.exp(x - y),)


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
        self.divisor = builtins.max(self.count - correction, 0)  # (max is gg.max)
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


# -- public wrappers -------------------------------------------------------------------------------
def sum(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Sum.apply(as_tensor(x), axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    return Mean.apply(as_tensor(x), axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Max.apply(as_tensor(x), axis=axis, keepdims=keepdims)


def min(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Min.apply(as_tensor(x), axis=axis, keepdims=keepdims)


def logsumexp(x, axis=None, keepdims: bool = False) -> Tensor:
    return LogSumExp.apply(floating(x, "logsumexp"), axis=axis, keepdims=keepdims)


def _arg_axis(op: str, x: Tensor, axis):
    """argmax / argmin's axis validated (an int or None) and its length checked (no empty)."""
    if axis is not None and (not isinstance(axis, (int, np.integer)) or isinstance(axis, bool)):
        raise TypeError(f"{op}: axis must be an int or None, got {axis!r}")
    try:
        axes = normalize_axis(op, axis, x.ndim)
    except ValueError as e:
        raise ValueError(f"{e} (shape {x.shape})") from None
    check_nonempty(op, x.shape, axes)
    return None if axes is None else axes[0]


def argmax(x, axis=None, keepdims: bool = False) -> Tensor:
    x = as_tensor(x)
    axis = _arg_axis("argmax", x, axis)
    return untracked_result(x.device, _argmax, x, axis, keepdims)


def argmin(x, axis=None, keepdims: bool = False) -> Tensor:
    x = as_tensor(x)
    axis = _arg_axis("argmin", x, axis)
    return untracked_result(x.device, _argmin, x, axis, keepdims)


def _argmax(a, axis, keepdims: bool):
    return a.argmax(axis=axis, keepdims=keepdims)


def _argmin(a, axis, keepdims: bool):
    return a.argmin(axis=axis, keepdims=keepdims)


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
    x = as_tensor(x)
    return Prod.apply(x, axes=axes_of("prod", axis, x.shape), keepdims=keepdims)


def norm(x, ord=2, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A002 - numpy's name
    """Vector norm over ``axis`` (all elements when None, like ``torch.linalg.vector_norm``):
    ``ord`` 2 (Euclidean), 1 (Σ|x|), ``inf`` (max |x|) or ``-inf`` (min |x|)."""
    x = float_tensor(x, "norm")
    axes = axes_of("norm", axis, x.shape)
    if ord == 2:
        return Norm2.apply(x, axes=axes, keepdims=keepdims)
    if ord == 1:
        return sum(_abs(x), axis=axes, keepdims=keepdims)
    if ord == math.inf:
        return max(_abs(x), axis=axes, keepdims=keepdims)
    if ord == -math.inf:
        return min(_abs(x), axis=axes, keepdims=keepdims)
    raise ValueError(f"norm: ord must be 1, 2, inf or -inf (vector norms), got {ord!r} "
                     f"(tensor shape {x.shape})")


def cumsum(x, axis=None) -> Tensor:
    """Running sum along ``axis``; None runs over the flattened tensor (NumPy's rule)."""
    x = as_tensor(x)
    if axis is None:
        return Cumsum.apply(reshape(x, -1), axis=0)
    a = axis_of("cumsum", axis, x.shape, scalar_axis=True)  # torch: a 0-d tensor has dims 0, -1
    if x.ndim == 0:  # (NumPy refuses any axis)
        return Cumsum.apply(reshape(x, 1), axis=0).reshape(())
    return Cumsum.apply(x, axis=a)
