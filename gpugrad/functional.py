"""Losses and activations as functions, like ``torch.nn.functional`` (``import gpugrad.functional
as F``).

Every loss takes ``reduction="mean" | "sum" | "none"``. Arguments are checked here, once, with
errors that name the op, the shapes and the dtypes; the derivative rules are the Functions in
``gpugrad.ops.losses``. Targets that are not Tensors (lists, NumPy or CuPy arrays, Python numbers)
are converted onto the input's device; float targets are cast to the input's dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import ops as _ops
from .autograd import is_grad_enabled
from .backend import DeviceError
from .ops import gelu, leaky_relu, linear, log_softmax, relu, sigmoid, softmax, tanh
from .ops import losses as _losses
from .tensor import Tensor

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "gelu",
    "leaky_relu",
    "linear",
    "log_softmax",
    "mse_loss",
    "nll_loss",
    "relu",
    "sigmoid",
    "softmax",
    "tanh",
]


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in _losses._REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _float_input(op: str, x: Any, what: str = "input") -> Tensor:
    if x.__class__ is not Tensor:
        x = Tensor(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: {what} must be a floating-point tensor, got dtype {x.dtype} "
                        f"(shape {x.shape})")
    return x


def _same_device(op: str, a: Tensor, b: Tensor, what: str = "target") -> None:
    if a.device is not b.device:
        raise DeviceError(f"{op}: input is on {a.device} but {what} is on {b.device}; move "
                          "them to one device with .to(device) first")


def _float_target(op: str, target: Any, x: Tensor) -> Tensor:
    """``target`` as a tensor on ``x``'s device with ``x``'s dtype and shape (else ValueError)."""
    if target.__class__ is not Tensor:
        target = Tensor(target, dtype=x.dtype, device=x.device)
    else:
        _same_device(op, x, target)
        if target.dtype.kind not in "fiub":
            raise TypeError(f"{op}: target must be a real tensor, got dtype {target.dtype}")
        if target.dtype != x.dtype:
            target = _ops.astype(target, x.dtype)  # differentiable for float targets
    if target.shape != x.shape:
        raise ValueError(f"{op}: target shape {target.shape} does not match input shape "
                         f"{x.shape}; reshape one of them (e.g. (N,) vs (N, 1))")
    return target


def _will_differentiate(x: Tensor) -> bool:
    return x.requires_grad and is_grad_enabled()


# -- regression and binary classification -------------------------------------------------------
def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Mean squared error ``(input - target)²``, averaged, summed or per element."""
    _check_reduction("mse_loss", reduction)
    x = _float_input("mse_loss", input)
    t = _float_target("mse_loss", target, x)
    return _losses.MSELoss.apply(x, t, reduction=reduction)


def binary_cross_entropy(input: Any, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002
    """BCE on probabilities in [0, 1]; both logs are clamped at -100 so p = 0 or 1 stays finite.

    Prefer ``binary_cross_entropy_with_logits`` on raw scores: it is exact for large |z|.
    """
    _check_reduction("binary_cross_entropy", reduction)
    p = _float_input("binary_cross_entropy", input)
    t = _float_target("binary_cross_entropy", target, p)
    return _losses.BCE.apply(p, t, reduction=reduction)


def binary_cross_entropy_with_logits(input: Any, target: Any,  # noqa: A002
                                     reduction: str = "mean") -> Tensor:
    """BCE on logits z: ``max(z, 0) - z·t + log1p(exp(-|z|))``, finite for every finite z."""
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    z = _float_input("binary_cross_entropy_with_logits", input)
    t = _float_target("binary_cross_entropy_with_logits", target, z)
    return _losses.BCEWithLogits.apply(z, t, reduction=reduction,
                                       with_grad=_will_differentiate(z))


# -- multi-class classification -----------------------------------------------------------------
def _class_problem(op: str, input: Any, target: Any, ignore_index: int):  # noqa: A002
    """Flatten (N, C), (C,) or (N, C, d1, ...) scores to rows of C, with labels to match.

    Returns (scores (M, C), labels (M,) int64 Tensor, output shape for reduction="none").
    """
    x = _float_input(op, input, "logits")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{op}: ignore_index must be an int, got {ignore_index!r}")
    if target.__class__ is not Tensor:
        target = Tensor(target, device=x.device)
    else:
        _same_device(op, x, target, "labels")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: labels must be integer class indices, got dtype {target.dtype} "
                        f"(shape {target.shape}); convert with labels.astype('int64')")
    if x.ndim == 0:
        raise ValueError(f"{op}: logits must have a class dimension, got a 0-d tensor")
    expected = () if x.ndim == 1 else x.shape[:1] + x.shape[2:]
    if target.shape != expected:
        layout = "(C,) with a 0-d label" if x.ndim == 1 else "(N, C, ...) with labels (N, ...)"
        raise ValueError(f"{op}: logits of shape {x.shape} need labels of shape {expected}, got "
                         f"{target.shape} (expected {layout})")
    c = x.shape[0] if x.ndim == 1 else x.shape[1]
    if c == 0:
        raise ValueError(f"{op}: logits of shape {x.shape} have no classes")
    if x.ndim == 1:
        x = _ops.reshape(x, (1, c))
    elif x.ndim > 2:  # classes last, then one row per position
        x = _ops.reshape(_ops.transpose(x, (0, *range(2, x.ndim), 1)), (-1, c))
    labels = target.data
    if labels.dtype != np.int64 or labels.ndim != 1:
        with x.device.activate():  # a cast or copy, on the labels' GPU
            labels = labels.astype(np.int64, copy=False).reshape(-1)
    return x, Tensor._wrap(labels, x.device), expected


def cross_entropy(input: Any, target: Any, reduction: str = "mean",  # noqa: A002
                  ignore_index: int = -100) -> Tensor:
    """Softmax cross-entropy of logits ``(N, C)`` against integer labels ``(N,)``.

    Also accepts ``(C,)`` logits with a 0-d label and ``(N, C, d1, ...)`` logits with labels
    ``(N, d1, ...)``. Rows whose label equals ``ignore_index`` contribute nothing, and "mean"
    divides by the number of the other rows (NaN if there are none, like PyTorch). Labels outside
    ``[0, C)`` raise ValueError on every device; float labels raise TypeError.
    """
    _check_reduction("cross_entropy", reduction)
    x, labels, shape = _class_problem("cross_entropy", input, target, ignore_index)
    loss = _losses.CrossEntropy.apply(x, labels, ignore_index=int(ignore_index),
                                      reduction=reduction, with_grad=_will_differentiate(x))
    if reduction == "none" and loss.shape != shape:
        loss = _ops.reshape(loss, shape)
    return loss


def nll_loss(input: Any, target: Any, reduction: str = "mean",  # noqa: A002
             ignore_index: int = -100) -> Tensor:
    """Negative log-likelihood of log-probabilities (e.g. ``log_softmax`` output) at the labels.

    ``nll_loss(log_softmax(z), y)`` equals ``cross_entropy(z, y)``; prefer the latter, which
    runs one fused pass.
    """
    _check_reduction("nll_loss", reduction)
    x, labels, shape = _class_problem("nll_loss", input, target, ignore_index)
    xp = x.device.xp
    lab = labels.data
    with x.device.activate():  # array math outside any op: run it on x's GPU
        _losses.check_labels(xp, lab, x.shape[1], int(ignore_index))
        valid = lab != ignore_index
        rows, cols = xp.arange(lab.shape[0]), xp.where(valid, lab, 0)
        weight = valid.astype(x.dtype)
        if reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                weight /= valid.sum().astype(x.dtype)
    picked = x[rows, cols]
    loss = -(picked * Tensor._wrap(weight, x.device))
    if reduction == "none":
        return _ops.reshape(loss, shape) if loss.shape != shape else loss
    return _ops.sum(loss)
