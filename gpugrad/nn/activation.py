"""Activation modules over the ops of the same names: ``SiLU``, ``ELU``, ``Softplus`` (PyTorch's
formulas, defaults and reprs). The older activations (``ReLU``, ``GELU``, ...) live in
``layers.py``; every one is registered by name in ``nn.ACTIVATIONS`` for ``MLP``."""

from __future__ import annotations

from .. import ops
from ..tensor import Tensor
from .module import Module

__all__ = ["ELU", "SiLU", "Softplus"]


class SiLU(Module):
    """``x·sigmoid(x)`` (swish), like ``torch.nn.SiLU``."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.silu(x)


class ELU(Module):
    """``x`` for x > 0, else ``alpha·(exp(x) − 1)``, like ``torch.nn.ELU``."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: Tensor) -> Tensor:
        return ops.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Softplus(Module):
    """``log(1 + exp(beta·x)) / beta``, linear where ``beta·x > threshold``, like
    ``torch.nn.Softplus``."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        if not beta:
            raise ValueError(f"Softplus: beta must be non-zero, got {beta!r}")
        self.beta, self.threshold = float(beta), float(threshold)

    def forward(self, x: Tensor) -> Tensor:
        return ops.softplus(x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"
