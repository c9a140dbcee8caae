"""Elementwise ops: each forward beside its derivative rule.

Binary ops broadcast like NumPy; ``reduce_to`` sums a broadcast gradient back to the input's shape
and dtype. A Python scalar operand is a constant: it is passed straight to the array module (so
NumPy's weak-scalar promotion applies) and gets no gradient.
"""

from __future__ import annotations

import math
import operator

from ..autograd import Function

_SCALARS = (int, float, bool)


def meta(x):
    """(shape, dtype) of an array operand, or None for a Python scalar."""
    return None if x.__class__ in _SCALARS else (x.shape, x.dtype)


def sum_to(g, shape):
    """Sum a broadcast gradient ``g`` down to ``shape`` (works on arrays and Tensors)."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1
    )
    if axes:
        g = g.sum(axis=axes, keepdims=True)
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


def _check_broadcast(op: str, a, b) -> None:
    sa = () if a.__class__ in _SCALARS else a.shape
    sb = () if b.__class__ in _SCALARS else b.shape
    for x, y in zip(reversed(sa), reversed(sb)):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"{op}: shapes {sa} and {sb} cannot be broadcast together")


class Binary(Function):
    """Shared forward for broadcasting binary ops: ``compute`` plus the operands' metadata."""

    compute = None  # a C-level callable (operator.add, ...) keeps the hot path short

    def forward(self, a, b):
        self.ma = None if a.__class__ in _SCALARS else (a.shape, a.dtype)
        self.mb = None if b.__class__ in _SCALARS else (b.shape, b.dtype)
        try:
            return self.compute(a, b)
        except ValueError:
            _check_broadcast(type(self).__name__.lower(), a, b)
            raise


class Add(Binary):
    compute = staticmethod(operator.add)
    def backward(self, ops, g): return reduce_to(g, self.ma), reduce_to(g, self.mb)


class Sub(Binary):
    compute = staticmethod(operator.sub)
    def backward(self, ops, g): return reduce_to(g, self.ma), reduce_to(-g, self.mb)


class Mul(Binary):
    save_inputs = (0, 1)
    compute = staticmethod(operator.mul)

    def backward(self, ops, g, a, b):
        need_a, need_b = self.needs_input_grad
        return (reduce_to(g * b, self.ma) if need_a else None,
                reduce_to(g * a, self.mb) if need_b else None)


class Div(Binary):
    save_inputs = (0, 1)
    compute = staticmethod(operator.truediv)

    def backward(self, ops, g, a, b):
        need_a, need_b = self.needs_input_grad
        ga = g / b
        return (reduce_to(ga, self.ma) if need_a else None,
                reduce_to(-ga * a / b, self.mb) if need_b else None)


class Pow(Binary):
    save_inputs = (0, 1)
    save_output = True
    compute = staticmethod(operator.pow)

    def backward(self, ops, g, a, b, y):
        need_a, need_b = self.needs_input_grad
        ga = None
        if need_a and b.__class__ in _SCALARS:  # a^0 is constant: 0, not 0·a^-1 (NaN at a = 0)
            ga = reduce_to(g * b * a ** (b - 1) if b != 0 else g * 0, self.ma)
        elif need_a:  # the same where a tensor exponent is 0: a^1 stands in for a^-1 there
            ga = reduce_to(g * b * a ** ops.where(b == 0, 1, b - 1), self.ma)
        gb = None
        if need_b and a.__class__ in _SCALARS:  # d(c^b)/db = c^b log c for a constant base c
            gb = reduce_to(g * y * math.log(a) if a > 0 else g * 0, self.mb)
        elif need_b:  # d(a^b)/db = a^b log a, taken as 0 where a <= 0
            positive = a > 0
            gb = reduce_to(ops.where(positive, g * y * ops.log(ops.where(positive, a, 1)), 0),
                           self.mb)
        return ga, gb


class Maximum(Binary):
    save_inputs = (0, 1)
    def compute(self, a, b): return self.xp.maximum(a, b)

    def backward(self, ops, g, a, b):
        ga = ops.where(a == b, g * 0.5, ops.where(a > b, g, 0))  # ties split evenly
        return reduce_to(ga, self.ma), reduce_to(g - ga, self.mb)


class Minimum(Binary):
    save_inputs = (0, 1)
    def compute(self, a, b): return self.xp.minimum(a, b)

    def backward(self, ops, g, a, b):
        ga = ops.where(a == b, g * 0.5, ops.where(a < b, g, 0))
        return reduce_to(ga, self.ma), reduce_to(g - ga, self.mb)


class Neg(Function):
    def forward(self, x): return -x
    def backward(self, ops, g): return (-g,)


class Exp(Function):
    save_output = True
    def forward(self, x): return self.xp.exp(x)
    def backward(self, ops, g, y): return (g * y,)


class Log(Function):
    save_inputs = (0,)
    def forward(self, x): return self.xp.log(x)
    def backward(self, ops, g, x): return (g / x,)


class Sqrt(Function):
    save_output = True
    def forward(self, x): return self.xp.sqrt(x)
    def backward(self, ops, g, y): return (g * 0.5 / y,)


class Abs(Function):
    save_inputs = (0,)
    def forward(self, x): return self.xp.abs(x)
    def backward(self, ops, g, x): return (g * ops.sign(x),)


class Sin(Function):
    save_inputs = (0,)
    def forward(self, x): return self.xp.sin(x)
    def backward(self, ops, g, x): return (g * ops.cos(x),)


class Cos(Function):
    save_inputs = (0,)
    def forward(self, x): return self.xp.cos(x)
    def backward(self, ops, g, x): return (-g * ops.sin(x),)


class Tanh(Function):
    save_output = True
    def forward(self, x): return self.xp.tanh(x)
    def backward(self, ops, g, y): return (g * (1 - y * y),)


class Erf(Function):
    save_inputs = (0,)
    def forward(self, x): return self.device.backend.erf(x)
    def backward(self, ops, g, x): return (g * 1.1283791670955126 * ops.exp(-x * x),)


class Sign(Function):
    def forward(self, x): return self.xp.sign(x)
    def backward(self, ops, g): return (g * 0,)


class Clip(Function):
    save_inputs = (0,)

    def forward(self, x, lo=None, hi=None):
        self.lo, self.hi = lo, hi
        return self.xp.clip(x, lo, hi)

    def backward(self, ops, g, x):
        inside = True
        if self.lo is not None:
            inside = x >= self.lo
        if self.hi is not None:
            inside = (x <= self.hi) & inside
        return (ops.where(inside, g, 0),)


class Where(Function):
    save_inputs = (0,)

    def forward(self, cond, a, b):
        self.ma, self.mb = meta(a), meta(b)
        try:
            return self.xp.where(cond, a, b)
        except ValueError:
            shapes = ", ".join(str(getattr(x, "shape", ())) for x in (cond, a, b))
            raise ValueError(f"where: shapes {shapes} cannot be broadcast together") from None

    def backward(self, ops, g, cond):
        _, need_a, need_b = self.needs_input_grad
        return (None,
                reduce_to(ops.where(cond, g, 0), self.ma) if need_a else None,
                reduce_to(ops.where(cond, 0, g), self.mb) if need_b else None)
