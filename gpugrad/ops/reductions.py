"""Reductions with ``axis`` / ``keepdims``, and the numerically stable softmax family."""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function


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
        return x.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, ops, g):
        return (ops.broadcast_to(expand_reduced(g, self.shape, self.axes, self.keepdims),
                                 self.shape),)


class Mean(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.shape, self.keepdims = x.shape, keepdims
        self.axes = normalize_axis("mean", axis, x.ndim)
        axes = range(x.ndim) if self.axes is None else self.axes
        self.count = math.prod(x.shape[a] for a in axes)
        return x.mean(axis=self.axes, keepdims=keepdims)

    def backward(self, ops, g):
        g = expand_reduced(g, self.shape, self.axes, self.keepdims) / self.count
        return (ops.broadcast_to(g, self.shape),)


class _Extremum(Function):
    """max / min: the gradient is split evenly between tied extrema (deterministic)."""

    save_inputs = (0,)
    save_output = True

    def forward(self, x, axis=None, keepdims=False):
        name = type(self).__name__.lower()
        self.axes, self.keepdims = normalize_axis(name, axis, x.ndim), keepdims
        if x.size == 0:
            raise ValueError(f"{name}: cannot reduce an empty tensor of shape {x.shape}")
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


class Softmax(Function):
    save_output = True

    def forward(self, x, axis=-1):
        (self.axis,) = normalize_axis("softmax", axis, x.ndim)
        e = x - x.max(axis=self.axis, keepdims=True)
        self.xp.exp(e, out=e)
        e /= e.sum(axis=self.axis, keepdims=True)
        return e

    def backward(self, ops, g, y):
        gy = g * y
        return (gy - y * gy.sum(axis=self.axis, keepdims=True),)


class LogSoftmax(Function):
    save_output = True

    def forward(self, x, axis=-1):
        (self.axis,) = normalize_axis("log_softmax", axis, x.ndim)
        shifted = x - x.max(axis=self.axis, keepdims=True)
        lse = self.xp.log(self.xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        shifted -= lse
        return shifted

    def backward(self, ops, g, y):
        return (g - ops.exp(y) * g.sum(axis=self.axis, keepdims=True),)
