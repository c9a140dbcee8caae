"""Losses, activations and layer functions, like ``torch.nn.functional`` (``import
gpugrad.functional as F``). A pure re-export: each function lives, with its Function and
derivative rule, in the ``gpugrad.ops`` module of its concept (``losses``, ``cross_entropy``,
``activations``, ``normalization``, ``indexing``, ``stochastic``, ``linalg``).

Every loss takes ``reduction="mean" | "sum" | "none"``. PyTorch's ``weight``, ``pos_weight`` and
``label_smoothing`` are keyword-only here (the third positional argument has always been
``reduction``).
"""

from __future__ import annotations

from .ops.activations import (
    elu,
    gelu,
    leaky_relu,
    log_softmax,
    relu,
    sigmoid,
    silu,
    softmax,
    softplus,
)
from .ops.cross_entropy import cross_entropy, nll_loss
from .ops.elementwise import tanh
from .ops.indexing import embedding
from .ops.linalg import linear
from .ops.losses import binary_cross_entropy, binary_cross_entropy_with_logits, mse_loss
from .ops.normalization import batch_norm, layer_norm
from .ops.stochastic import dropout

__all__ = [
    "binary_cross_entropy",
    "batch_norm",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "dropout",
    "elu",
    "embedding",
    "gelu",
    "layer_norm",
    "leaky_relu",
    "linear",
    "log_softmax",
    "mse_loss",
    "nll_loss",
    "relu",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "tanh",
]
