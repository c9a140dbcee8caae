"""Reductions with ``axis`` / ``keepdims``, and the numerically stable softmax family."""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from .elementwise import acc_sum


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


def _softmax_axis(op: str, x, axis):
    """The softmax axis, and ``x`` as 1-D when it is 0-d (torch: softmax of a scalar is 1, for
    axis 0 or -1); None as the axis when 0-d, so backward sums the whole (0-d) gradient."""
    if x.ndim == 0:
        normalize_axis(op, axis, 1)
        return None, x.reshape((1,))
    (a,) = normalize_axis(op, axis, x.ndim)
    return a, x


class Softmax(Function):
    save_output = True

    def forward(self, x, axis=-1):
        self.axis, x1 = _softmax_axis("softmax", x, axis)
        a = 0 if self.axis is None else self.axis
        if x1.shape[a] == 0:  # nothing to normalise: an empty result, like torch
            return x.copy()
        e = x1 - x1.max(axis=a, keepdims=True)
        self.xp.exp(e, out=e)
        e /= e.sum(axis=a, keepdims=True)
        return e if x1 is x else e.reshape(())

    def backward(self, ops, g, y):
        gy = g * y
        return (gy - y * gy.sum(axis=self.axis, keepdims=True),)


class LogSoftmax(Function):
    save_output = True

    def forward(self, x, axis=-1):
        self.axis, x1 = _softmax_axis("log_softmax", x, axis)
        a = 0 if self.axis is None else self.axis
        if x1.shape[a] == 0:
            return x.copy()
        shifted = x1 - x1.max(axis=a, keepdims=True)
        lse = self.xp.log(self.xp.exp(shifted).sum(axis=a, keepdims=True))
        shifted -= lse
        return shifted if x1 is x else shifted.reshape(())

    def backward(self, ops, g, y):
        return (g - ops.exp(y) * g.sum(axis=self.axis, keepdims=True),)
