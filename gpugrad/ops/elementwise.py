"""Elementwise ops: each forward beside its derivative rule.

Binary ops broadcast like NumPy; ``reduce_to`` sums a broadcast gradient back to the input's shape
and dtype. A Python scalar operand is a constant: it is passed straight to the array module (so
NumPy's weak-scalar promotion applies) and gets no gradient.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from ..autograd import Function
from ..tensor import Tensor

_SCALARS = (int, float, bool)
_SAME_SIZE_INT = {2: np.int16, 4: np.int32, 8: np.int64}


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


def mask_select(ops, mask, g):
    """``where(mask, g, 0)``: exactly 0 where the mask is off, even where ``g`` is inf or NaN
    (``g * mask`` would give NaN there). NumPy's ``where`` is ~12x slower than a multiply on a
    random mask (branch mispredictions), so NumPy arrays AND the float's bits with an all-ones
    or all-zeros integer mask instead: exact, branchless, within ~10% of ``g * mask`` (and ~8x
    faster than it for float16). CuPy arrays and Tensors (graph mode) use ``ops.where``."""
    if (g.__class__ is np.ndarray and mask.__class__ is np.ndarray and g.shape == mask.shape
            and g.dtype.kind == "f" and g.dtype.itemsize in _SAME_SIZE_INT):
        as_int = _SAME_SIZE_INT[g.dtype.itemsize]
        out = np.empty_like(g)  # owns its memory (a view would be copied again at a leaf)
        bits = out.view(as_int)
        np.copyto(bits, mask)
        np.negative(bits, out=bits)  # True -> -1 (all bits set), False -> 0
        np.bitwise_and(g.view(as_int), bits, out=bits)
        return out
    return ops.where(mask, g, 0)


def reduce_to(g, m):
    """``g`` summed to the operand's shape and cast to its dtype (None for a scalar operand)."""
    if m is None:
        return None
    if g.shape != m[0]:
        g = sum_to(g, m[0])
    if g.dtype != m[1]:
        g = g.astype(m[1])
    return g


def _describe(x) -> str:
    return repr(x) if x.__class__ in _SCALARS else f"of shape {x.shape} and dtype {x.dtype}"


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
                             f"{_describe(a)}, exponent {b}); use a floating-point base")
        try:
            return super().forward(a, b)
        except ValueError as e:
            if _is_int(a) and _is_int(b) and "negative integer powers" in str(e):
                raise ValueError(f"pow: integers to negative integer powers are not allowed "
                                 f"(base {_describe(a)}, exponent {_describe(b)}); use a "
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
        g = mask_select(ops, inside, g)
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
