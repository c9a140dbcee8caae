"""Elementwise ops: each Function's forward beside its derivative rule, then the public wrappers.

Binary ops broadcast like NumPy; ``reduce_to`` sums a broadcast gradient back to the input's shape
and dtype. A Python scalar operand is a constant: it is passed straight to the array module (so
NumPy's weak-scalar promotion applies) and gets no gradient. Rules use only operators and the
``ops`` namespace they receive, so they run on arrays and, under ``create_graph=True``, on
Tensors (higher derivatives).
"""

from __future__ import annotations

import math
import operator

import numpy as np

from ..autograd import Function
from ..tensor import Tensor
from ._coerce import as_tensor, binary, float_tensor, operand, scalar_arg
from ._rules import check_broadcast, describe, meta, reduce_to

_SCALARS = (int, float, bool)


class Binary(Function):
    """Shared forward for broadcasting binary ops: ``compute`` plus the operands' metadata."""

    compute = None  # a C-level callable (operator.add, ...) keeps the hot path short

    def forward(self, a, b):
        self.ma = None if a.__class__ in _SCALARS else (a.shape, a.dtype)
        self.mb = None if b.__class__ in _SCALARS else (b.shape, b.dtype)
        try:
            return self.compute(a, b)
        except ValueError:
            check_broadcast(type(self).__name__.lower(), a, b)
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


def _is_int(x) -> bool:
    return x.__class__ is int or (x.__class__ not in _SCALARS and x.dtype.kind in "iub")


class Pow(Binary):
    save_inputs = (0, 1)
    save_output = True
    compute = staticmethod(operator.pow)

    def forward(self, a, b):
        # NumPy refuses integers to negative integer powers (CuPy quietly gives 0); say so here,
        # without a device sync: a Python exponent is checked up front, an array one by NumPy.
        if b.__class__ is int and b < 0 and _is_int(a):
            raise ValueError(f"pow: integers to negative integer powers are not allowed (base "
                             f"{describe(a)}, exponent {b}); use a floating-point base")
        try:
            return super().forward(a, b)
        except ValueError as e:
            if _is_int(a) and _is_int(b) and "negative integer powers" in str(e):
                raise ValueError(f"pow: integers to negative integer powers are not allowed "
                                 f"(base {describe(a)}, exponent {describe(b)}); use a "
                                 "floating-point base") from None
            raise

    def backward(self, ops, g, a, b, y):
        need_a, need_b = self.needs_input_grad
        ga = None
        if need_a and b.__class__ in _SCALARS:  # a^0 is constant: 0, not 0·a^-1 (NaN at a = 0)
            ga = reduce_to(g * b * a ** (b - 1) if b != 0 else g * 0, self.ma)
        elif need_a:
            # b·a^(b-1) is 0 where b = 0 (PyTorch's value), except that 0·0^-1 is NaN: only at
            # a = b = 0 does a^1 stand in for a^-1. Substituting wherever b = 0 would be right in
            # value but wrong in its derivative by b (a instead of 1/a).
            ga = reduce_to(g * b * a ** ops.where((b == 0) & (a == 0), 1, b - 1), self.ma)
        gb = None
        if need_b and a.__class__ in _SCALARS:  # d(c^b)/db = c^b log c for a constant base c
            gb = reduce_to(g * y * math.log(a) if a > 0 else g * 0, self.mb)
        elif need_b:  # d(a^b)/db = a^b log a, taken as 0 where a <= 0
            positive = a > 0
            gb = reduce_to(ops.where(positive, g * y * ops.log(ops.where(positive, a, 1)), 0),
                           self.mb)
        return ga, gb


def _extremum_grads(fn, ops, g, a, b, a_loses, b_loses):
    """Each side's gradient from its own mask (PyTorch's rule): half of ``g`` at ties, ``g``
    where it is not the loser, exactly 0 where it loses (even where ``g`` is inf or NaN; with a
    NaN operand neither side loses). ``g - ga`` would turn an inf ``g`` into NaN for the loser."""
    need_a, need_b = fn.needs_input_grad
    tie = a == b
    half = g * 0.5
    ga = reduce_to(ops.where(tie, half, ops.where(a_loses, 0, g)), fn.ma) if need_a else None
    gb = reduce_to(ops.where(tie, half, ops.where(b_loses, 0, g)), fn.mb) if need_b else None
    return ga, gb


class Maximum(Binary):
    save_inputs = (0, 1)
    def compute(self, a, b): return self.xp.maximum(a, b)
    def backward(self, ops, g, a, b): return _extremum_grads(self, ops, g, a, b, a < b, a > b)


class Minimum(Binary):
    save_inputs = (0, 1)
    def compute(self, a, b): return self.xp.minimum(a, b)
    def backward(self, ops, g, a, b): return _extremum_grads(self, ops, g, a, b, a > b, a < b)


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

    def forward(self, x, lo=None, hi=None):  # lo, hi: Python scalars or None (see gg.clip)
        self.lo, self.hi, self.dtype = lo, hi, x.dtype
        return self.xp.clip(x, lo, hi)

    def backward(self, ops, g, x):
        if self.lo is not None and self.hi is not None:
            inside = (x >= self.lo) & (x <= self.hi)
        else:
            inside = x >= self.lo if self.lo is not None else x <= self.hi
        g = ops.mask_select(inside, g)
        return (g if g.dtype == self.dtype else g.astype(self.dtype),)


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


class Log1p(Function):
    """``log(1 + x)``, exact for tiny x; d/dx = 1 / (1 + x)."""

    save_inputs = (0,)
    def forward(self, x): return self.xp.log1p(x)
    def backward(self, ops, g, x): return (g / (1 + x),)


class Expm1(Function):
    """``exp(x) − 1``, exact for tiny x; d/dx = exp(x) = y + 1."""

    save_output = True
    def forward(self, x): return self.xp.expm1(x)
    def backward(self, ops, g, y): return (g * (y + 1),)


class Square(Function):
    """``x²`` (any dtype); d/dx = 2x."""

    save_inputs = (0,)
    def forward(self, x): return x * x
    def backward(self, ops, g, x): return (g * (2 * x),)


class Reciprocal(Function):
    """``1 / x``; d/dx = −1/x² = −y²."""

    save_output = True
    def forward(self, x): return 1 / x
    def backward(self, ops, g, y): return (-g * (y * y),)


class LogAddExp(Binary):
    """``log(exp(a) + exp(b))`` without overflow (broadcasting, like ``np.logaddexp``);
    d/da = exp(a − y), d/db = exp(b − y): the softmax weights of the two operands."""

    save_inputs = (0, 1)
    save_output = True
    def compute(self, a, b): return self.xp.logaddexp(a, b)

    def backward(self, ops, g, a, b, y):
        need_a, need_b = self.needs_input_grad
        return (reduce_to(g * ops.exp(a - y), self.ma) if need_a else None,
                reduce_to(g * ops.exp(b - y), self.mb) if need_b else None)


# -- public wrappers -------------------------------------------------------------------------------
def add(a, b) -> Tensor: return binary(Add, a, b)
def sub(a, b) -> Tensor: return binary(Sub, a, b)
def mul(a, b) -> Tensor: return binary(Mul, a, b)
def div(a, b) -> Tensor: return binary(Div, a, b)
def pow(a, b) -> Tensor: return binary(Pow, a, b)  # noqa: A001
def maximum(a, b) -> Tensor: return binary(Maximum, a, b)
def minimum(a, b) -> Tensor: return binary(Minimum, a, b)
def neg(x) -> Tensor: return Neg.apply(as_tensor(x))
def exp(x) -> Tensor: return Exp.apply(as_tensor(x))
def log(x) -> Tensor: return Log.apply(as_tensor(x))
def sqrt(x) -> Tensor: return Sqrt.apply(as_tensor(x))
def abs(x) -> Tensor: return Abs.apply(as_tensor(x))  # noqa: A001
def sin(x) -> Tensor: return Sin.apply(as_tensor(x))
def cos(x) -> Tensor: return Cos.apply(as_tensor(x))
def tanh(x) -> Tensor: return Tanh.apply(as_tensor(x))
def erf(x) -> Tensor: return Erf.apply(as_tensor(x))


def sign(x) -> Tensor:
    x = as_tensor(x)
    if x.dtype == np.bool_:  # NumPy has no bool sign loop
        raise TypeError(f"sign: expected a numeric tensor, got dtype bool (shape {x.shape})")
    return Sign.apply(x)


def clip(x, min=None, max=None) -> Tensor:  # noqa: A002 - numpy/torch spelling
    if min is None and max is None:
        raise ValueError("clip: at least one of min and max must be given")
    return Clip.apply(as_tensor(x), lo=scalar_arg("clip", "min", min),
                      hi=scalar_arg("clip", "max", max))


def where(cond, a, b) -> Tensor:
    like = next((t for t in (cond, a, b) if t.__class__ is Tensor), None)
    cond = as_tensor(cond, like)
    if cond.dtype != np.bool_:
        raise TypeError(f"where: condition must be a bool tensor, got dtype {cond.dtype}")
    return Where.apply(cond, operand(a, like), operand(b, like))


def log1p(x) -> Tensor:
    return Log1p.apply(float_tensor(x, "log1p"))


def expm1(x) -> Tensor:
    return Expm1.apply(float_tensor(x, "expm1"))


def square(x) -> Tensor:
    return Square.apply(as_tensor(x))


def reciprocal(x) -> Tensor:
    return Reciprocal.apply(float_tensor(x, "reciprocal"))


def logaddexp(a, b) -> Tensor:
    for x in (a, b):
        if x.__class__ is Tensor and x.dtype.kind != "f":
            raise TypeError(f"logaddexp: expected floating-point tensors, got dtype {x.dtype} "
                            f"(shape {x.shape}, device {x.device})")
    return binary(LogAddExp, a, b)


def mask_select(mask, g) -> Tensor:
    """Graph mode's ``ops.mask_select`` (``ArrayOps.mask_select`` in array mode): ``where(mask,
    g, 0)``, exactly 0 where the mask is off."""
    return where(mask, g, 0)
