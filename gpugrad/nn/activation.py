"""Activation modules over the ops of the same names (PyTorch's formulas, defaults and reprs):
``Identity ReLU Sigmoid Tanh GELU LeakyReLU Softmax LogSoftmax SiLU ELU Softplus``, and
``ACTIVATIONS``, the names ``MLP`` (and the CLI) accept."""

from __future__ import annotations

from collections.abc import Callable

from .. import ops
from ..tensor import Tensor
from .module import Module

__all__ = ["ACTIVATIONS", "ELU", "GELU", "Identity", "LeakyReLU", "LogSoftmax", "ReLU", "SiLU",
           "Sigmoid", "Softmax", "Softplus", "Tanh"]


class Identity(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return ops.relu(x)


class Sigmoid(Module):
    def forward(self, x: Tensor) -> Tensor:
        return ops.sigmoid(x)


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return ops.tanh(x)


class GELU(Module):
    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return ops.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}" if self.approximate != "none" else ""


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return ops.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Softmax(Module):
    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return ops.softmax(x, axis=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, x: Tensor) -> Tensor:
        return ops.log_softmax(x, axis=self.dim)


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


ACTIVATIONS: dict[str, Callable[[], Module]] = {
    "relu": ReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "gelu": GELU,
    "leaky_relu": LeakyReLU,
    "identity": Identity,
    "silu": SiLU,
    "elu": ELU,
    "softplus": Softplus,
}
