"""Activations: every one of them, each Function's forward beside its derivative rule, then the
public wrappers. ``sigmoid`` runs the fused entry point (``kernels/sigmoid.cu`` on CUDA, the
array-module reference ``backend.fused_reference`` elsewhere or with ``GPUGRAD_FUSED=0``); its
graph-mode rule (``sigmoid_grad`` below) works on Tensors, so it is twice differentiable.
``tanh`` is NumPy's and lives with the elementwise ops.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..backend.config import fused_ops
from ..tensor import Tensor
from ._coerce import as_tensor, float_tensor, floating, scalar_arg
from ._rules import normalize_axis
from .shape import astype


class Sigmoid(Function):
    save_output = True

    def forward(self, x):
        return fused_ops(self.device.backend).sigmoid_forward(x)

    def backward(self, ops, g, y): return (ops.sigmoid_grad(y, g),)


class ReLU(Function):
    save_output = True
    def forward(self, x): return self.xp.maximum(x, 0)
    # A select, not g * mask (an inf or NaN g at a dead unit would give NaN, PyTorch gives 0);
    # ops.mask_select keeps NumPy at multiply speed (np.where is ~12x slower on random masks).
    def backward(self, ops, g, y): return (ops.mask_select(y > 0, g),)


class LeakyReLU(Function):
    save_inputs = (0,)

    def forward(self, x, negative_slope=0.01):  # a Python float (see gg.leaky_relu)
        self.slope = negative_slope
        return self.xp.where(x > 0, x, x * negative_slope)

    def backward(self, ops, g, x):
        gx = ops.where(x > 0, g, g * self.slope)
        return (gx if gx.dtype == x.dtype else gx.astype(x.dtype),)


class GELU(Function):
    """x·Φ(x) with the exact erf (PyTorch's default) or the tanh approximation."""

    save_inputs = (0,)
    _K = math.sqrt(2.0 / math.pi)

    def forward(self, x, approximate="none"):
        self.approximate = approximate
        xp = self.xp
        if approximate == "tanh":
            return 0.5 * x * (1 + xp.tanh(self._K * (x + 0.044715 * x ** 3)))
        return 0.5 * x * (1 + self.device.backend.erf(x * (1 / math.sqrt(2.0))))

    def backward(self, ops, g, x):
        if self.approximate == "tanh":
            t = ops.tanh(self._K * (x + 0.044715 * x ** 3))
            dt = (1 - t * t) * self._K * (1 + 3 * 0.044715 * x * x)
            return (g * (0.5 * (1 + t) + 0.5 * x * dt),)
        cdf = 0.5 * (1 + ops.erf(x * (1 / math.sqrt(2.0))))
        pdf = ops.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
        return (g * (cdf + x * pdf),)


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


# -- public wrappers -------------------------------------------------------------------------------
def relu(x) -> Tensor: return ReLU.apply(as_tensor(x))


def sigmoid(x) -> Tensor:
    x = as_tensor(x)
    if x.dtype.kind in "biu":  # the float dtype gg.exp gives (NumPy's loops), on either path
        x = astype(x, np.exp.resolve_dtypes((x.dtype, None))[1])
    return Sigmoid.apply(x)


def leaky_relu(x, negative_slope: float = 0.01) -> Tensor:
    negative_slope = scalar_arg("leaky_relu", "negative_slope", negative_slope)
    return LeakyReLU.apply(as_tensor(x), negative_slope=negative_slope)


def gelu(x, approximate: str = "none") -> Tensor:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(as_tensor(x), approximate=approximate)


def softmax(x, axis: int = -1) -> Tensor:
    return Softmax.apply(floating(x, "softmax"), axis=axis)


def log_softmax(x, axis: int = -1) -> Tensor:
    return LogSoftmax.apply(floating(x, "log_softmax"), axis=axis)


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


def sigmoid_grad(y, g) -> Tensor:
    """Graph mode's ``ops.sigmoid_grad`` (the fused backward in array mode): ``g·y·(1 − y)``."""
    return g * y * (1 - y)
