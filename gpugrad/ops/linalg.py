"""Matrix products: ``matmul`` (1-D, 2-D and batched, NumPy semantics) and ``linear`` (one node
for ``x @ w.T + b``): Functions, then the public wrappers."""

from __future__ import annotations

import math

from ..autograd import Function
from ..tensor import Tensor
from ._coerce import as_tensor
from ._rules import acc_sum, cast_to, sum_to


class MatMul(Function):
    save_inputs = (0, 1)

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: operands must have at least 1 dim, got shapes "
                             f"{a.shape} and {b.shape}")
        k_a = a.shape[-1]
        k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
        if k_a != k_b:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned "
                             f"({k_a} != {k_b})")
        try:
            return self.xp.matmul(a, b)
        except ValueError:
            raise ValueError(f"matmul: batch dims of {a.shape} and {b.shape} cannot be "
                             "broadcast together") from None

    def backward(self, ops, g, a, b):
        need_a, need_b = self.needs_input_grad
        # Lift 1-D operands to matrices so one formula covers every case.
        a2 = a.reshape((1, a.shape[0])) if a.ndim == 1 else a
        b2 = b.reshape((b.shape[0], 1)) if b.ndim == 1 else b
        if a.ndim == 1 and b.ndim == 1:
            g2 = g.reshape((1, 1))
        elif a.ndim == 1:
            g2 = g.reshape(g.shape[:-1] + (1, g.shape[-1]))
        elif b.ndim == 1:
            g2 = g.reshape(g.shape + (1,))
        else:
            g2 = g
        ga = gb = None
        if need_a:
            ga = cast_to(sum_to(g2 @ b2.swapaxes(-1, -2), a2.shape).reshape(a.shape), a.dtype)
        if need_b:
            gb = cast_to(sum_to(a2.swapaxes(-1, -2) @ g2, b2.shape).reshape(b.shape), b.dtype)
        return ga, gb


class Linear(Function):
    """``x @ w.T + b`` as one node (what an MLP layer records): w is (out, in), x is (..., in)."""

    save_inputs = (0, 1)

    def forward(self, x, w, b=None):
        if w.ndim != 2 or x.ndim == 0 or x.shape[-1] != w.shape[1]:
            raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape "
                             f"{w.shape} (expected (..., {w.shape[-1] if w.ndim else '?'}))")
        if b is not None and b.shape != (w.shape[0],):
            raise ValueError(f"linear: bias of shape {b.shape} does not match weight of shape "
                             f"{w.shape} (expected ({w.shape[0]},))")
        y = x @ w.T
        self.b_dtype = None
        if b is not None:
            self.b_dtype = b.dtype
            if b.dtype == y.dtype:
                y += b
            else:  # e.g. a float64 bias on a float32 product: promote, like x @ w.T + b
                y = y + b
        return y

    def backward(self, ops, g, x, w):
        need = self.needs_input_grad  # a list or tuple, one flag per input (2 or 3)
        need_x, need_w = need[0], need[1]
        need_b = len(need) > 2 and need[2]
        gx = cast_to(g @ w, x.dtype) if need_x else None
        gw = gb = None
        if need_w or need_b:
            # Rows counted, not inferred: reshape((-1, 0)) is ambiguous for an empty input.
            rows = math.prod(x.shape[:-1])
            g2 = g.reshape((rows, g.shape[-1]))
            if need_w:
                gw = cast_to(g2.T @ x.reshape((rows, x.shape[-1])), w.dtype)
            if need_b:
                gb = cast_to(acc_sum(g2, axis=0), self.b_dtype)  # float16: summed in float32
        return gx, gw, gb


# -- public wrappers -------------------------------------------------------------------------------
def matmul(a, b) -> Tensor:
    a = as_tensor(a, b if b.__class__ is Tensor else None)
    return MatMul.apply(a, as_tensor(b, a))


def linear(x, weight, bias=None) -> Tensor:
    x = as_tensor(x, weight)
    if bias is None:
        return Linear.apply(x, weight)
    return Linear.apply(x, weight, bias)
