"""Activations. ``sigmoid`` runs the fused kernels (``kernels/sigmoid.cu`` on CUDA, the same math
in NumPy on CPU); its rule also works on Tensors, so it is twice differentiable."""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..backend import fused_enabled


class Sigmoid(Function):
    save_output = True

    def forward(self, x):
        if fused_enabled():
            return self.device.backend.fused.sigmoid_forward(x)
        with np.errstate(over="ignore"):  # exp(-x) = inf gives exactly 0, as it should
            return 1 / (1 + self.xp.exp(-x))

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
