"""More elementwise ops and activations, each forward beside its derivative rule (like
tinygrad's gradient table). Rules use only operators and the ``ops`` namespace, so they run on
arrays and, under ``create_graph=True``, on Tensors (higher derivatives).

Imported at the end of ``gpugrad/ops/__init__.py`` (it uses that module's coercion helpers).
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..tensor import Tensor
from . import _binary, _t
from .elementwise import Binary, reduce_to


def float_tensor(x, op: str) -> Tensor:
    """``x`` as a Tensor, which must hold real floating-point numbers (else ``TypeError``)."""
    x = _t(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point tensor, got dtype {x.dtype} "
                        f"(shape {x.shape}, device {x.device})")
    return x


# -- elementwise ------------------------------------------------------------------------------
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


def log1p(x) -> Tensor:
    return Log1p.apply(float_tensor(x, "log1p"))


def expm1(x) -> Tensor:
    return Expm1.apply(float_tensor(x, "expm1"))


def square(x) -> Tensor:
    return Square.apply(_t(x))


def reciprocal(x) -> Tensor:
    return Reciprocal.apply(float_tensor(x, "reciprocal"))


def logaddexp(a, b) -> Tensor:
    for x in (a, b):
        if x.__class__ is Tensor and x.dtype.kind != "f":
            raise TypeError(f"logaddexp: expected floating-point tensors, got dtype {x.dtype} "
                            f"(shape {x.shape}, device {x.device})")
    return _binary(LogAddExp, a, b)


# -- activations ------------------------------------------------------------------------------
class Softplus(Function):
    """``log(1 + exp(beta·x)) / beta``, and ``x`` itself where ``beta·x > threshold`` (PyTorch's
    formula). The exponent is clamped at the threshold, so the discarded branch never overflows;
    float16 is computed in float32. d/dx = sigmoid(beta·x), or 1 above the threshold."""

    save_inputs = (0,)

    def forward(self, x, beta=1.0, threshold=20.0):
        self.beta, self.threshold = beta, threshold
        xp = self.xp
        xc = x.astype(np.float32) if x.dtype.itemsize < 4 else x  # exp(20) overflows float16
        z = xc * beta
        soft = xp.log1p(xp.exp(xp.minimum(z, threshold))) / beta
        return xp.where(z > threshold, xc, soft).astype(x.dtype, copy=False)

    def backward(self, ops, g, x):
        z = x * self.beta
        return (ops.where(z > self.threshold, g, g * ops.sigmoid(z)),)


class SiLU(Function):
    """``x·sigmoid(x)`` (swish); d/dx = s·(1 + x·(1 − s)) with s = sigmoid(x)."""

    save_inputs = (0,)

    def forward(self, x):
        return x * self.device.ops.sigmoid(x)

    def backward(self, ops, g, x):
        s = ops.sigmoid(x)
        return (g * s * (1 + x * (1 - s)),)


class ELU(Function):
    """``x`` for x > 0, else ``alpha·(exp(x) − 1)``; d/dx = 1, or ``alpha·exp(x)`` for x <= 0
    (PyTorch's choice at 0). exp only ever sees min(x, 0), so large inputs never overflow."""

    save_inputs = (0,)

    def forward(self, x, alpha=1.0):
        self.alpha = alpha
        xp = self.xp
        neg = alpha * xp.expm1(xp.minimum(x, 0))
        return xp.where(x > 0, x, neg).astype(x.dtype, copy=False)

    def backward(self, ops, g, x):
        pos = x > 0
        return (ops.where(pos, g, g * self.alpha * ops.exp(ops.where(pos, 0, x))),)


def softplus(x, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """PyTorch's ``F.softplus``: ``log1p(exp(beta·x)) / beta``, linear above ``threshold``."""
    x = float_tensor(x, "softplus")
    if not beta:
        raise ValueError(f"softplus: beta must be non-zero, got {beta!r}")
    return Softplus.apply(x, beta=float(beta), threshold=float(threshold))


def silu(x) -> Tensor:
    """``x·sigmoid(x)`` (PyTorch's ``F.silu``)."""
    return SiLU.apply(float_tensor(x, "silu"))


def elu(x, alpha: float = 1.0) -> Tensor:
    """PyTorch's ``F.elu``: ``x`` for x > 0, else ``alpha·(exp(x) − 1)``."""
    return ELU.apply(float_tensor(x, "elu"), alpha=float(alpha))
