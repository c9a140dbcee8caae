"""Losses and activations as functions, like ``torch.nn.functional`` (``import gpugrad.functional
as F``).

Every loss takes ``reduction="mean" | "sum" | "none"``. Arguments are checked here, once, with
errors that name the op, the shapes and the dtypes; the derivative rules are the Functions in
``gpugrad.ops.losses``. Targets that are not Tensors (lists, NumPy or CuPy arrays, Python numbers)
are converted onto the input's device; float targets are cast to the input's dtype.

PyTorch's ``weight``, ``pos_weight`` and ``label_smoothing`` are keyword-only here (the third
positional argument has always been ``reduction``). Weights are converted like targets, must be
floating point, and are constants (not differentiated), as in PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import ops as _ops
from .autograd import is_grad_enabled, traced_call
from .backend import DeviceError
from .ops import (
    elu,
    gelu,
    leaky_relu,
    linear,
    log_softmax,
    relu,
    sigmoid,
    silu,
    softmax,
    softplus,
    tanh,
)
from .ops import losses as _losses
from .ops.shape import GetItem
from .ops.stochastic import dropout
from .tensor import Tensor

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


def _check_reduction(op: str, reduction: str) -> None:
    if not isinstance(reduction, str):
        # PyTorch's third positional argument is `weight`; here it is `reduction` (kept for the
        # callers written before weights existed), so say how to pass weights instead.
        raise TypeError(f"{op}: reduction must be 'mean', 'sum' or 'none', got a "
                        f"{type(reduction).__name__}; pass weights by keyword (weight=...)")
    if reduction not in _losses._REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_label_smoothing(op: str, label_smoothing: float) -> float:
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing,
                                                           (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: label_smoothing must be a float in [0, 1], got "
                        f"{label_smoothing!r}")
    if not 0.0 <= label_smoothing <= 1.0:  # also rejects NaN
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    return float(label_smoothing)


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


def _loss_weight(op: str, weight: Any, x: Tensor, what: str = "weight") -> Tensor:
    """``weight`` as a constant tensor on ``x``'s device with ``x``'s dtype.

    Weights are not differentiable, as in PyTorch: one that requires grad is refused rather
    than silently left without a gradient.
    """
    if weight.__class__ is not Tensor:
        weight = Tensor(weight, device=x.device)
    else:
        _same_device(op, x, weight, what)
    if weight.dtype.kind != "f":
        raise TypeError(f"{op}: {what} must be a floating-point tensor, got dtype {weight.dtype} "
                        f"(shape {weight.shape}); convert with {what}.astype('float32')")
    if _will_differentiate(weight):
        raise RuntimeError(f"{op}: {what} is not differentiable (as in PyTorch) but requires "
                           f"grad; pass {what}.detach()")
    return weight if weight.dtype == x.dtype else _ops.astype(weight, x.dtype)


def _elementwise_weight(op: str, weight: Any, x: Tensor, what: str) -> Tensor:
    """A weight that broadcasts to ``x``'s shape (per element, or per class along the last dim)."""
    w = _loss_weight(op, weight, x, what)
    try:
        fits = np.broadcast_shapes(w.shape, x.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{op}: {what} of shape {w.shape} does not broadcast to the input's "
                         f"shape {x.shape} (per class: shape ({x.shape[-1] if x.ndim else 1},))")
    return w


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    return _ops.sum(loss) if reduction == "sum" else _ops.mean(loss)


# -- regression and binary classification -------------------------------------------------------
def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Mean squared error ``(input - target)²``, averaged, summed or per element."""
    _check_reduction("mse_loss", reduction)
    x = _float_input("mse_loss", input)
    t = _float_target("mse_loss", target, x)
    return _losses.MSELoss.apply(x, t, reduction=reduction)


def binary_cross_entropy(input: Any, target: Any, reduction: str = "mean", *,  # noqa: A002
                         weight: Any = None) -> Tensor:
    """BCE on probabilities in [0, 1]; both logs are clamped at -100 so p = 0 or 1 stays finite.

    ``weight`` (broadcast to the input's shape) scales each element's loss; "mean" is then the
    plain mean of the weighted losses, as in PyTorch. Prefer ``binary_cross_entropy_with_logits``
    on raw scores: it is exact for large |z|.
    """
    op = "binary_cross_entropy"
    _check_reduction(op, reduction)
    p = _float_input(op, input)
    t = _float_target(op, target, p)
    if weight is None:
        return _losses.BCE.apply(p, t, reduction=reduction)
    w = _elementwise_weight(op, weight, p, "weight")
    return _reduce(_losses.BCE.apply(p, t, reduction="none") * w, reduction)


def binary_cross_entropy_with_logits(input: Any, target: Any,  # noqa: A002
                                     reduction: str = "mean", *, weight: Any = None,
                                     pos_weight: Any = None) -> Tensor:
    """BCE on logits z: ``max(z, 0) - z·t + log1p(exp(-|z|))``, finite for every finite z.

    ``weight`` (broadcast to the input's shape) scales each element's loss. ``pos_weight``
    (broadcast along the last, class, dimension: shape (C,)) scales the positive term, giving
    PyTorch's ``(1 - t)·z + (1 + (pw - 1)·t)·softplus(-z)``. Without them the fused kernel runs;
    with them the unreduced loss is combined with the weights by ordinary ops.
    """
    op = "binary_cross_entropy_with_logits"
    _check_reduction(op, reduction)
    z = _float_input(op, input)
    t = _float_target(op, target, z)
    grad = _will_differentiate(z)
    if weight is None and pos_weight is None:
        return _losses.BCEWithLogits.apply(z, t, reduction=reduction, with_grad=grad)
    w = None if weight is None else _elementwise_weight(op, weight, z, "weight")
    pw = None if pos_weight is None else _elementwise_weight(op, pos_weight, z, "pos_weight")
    loss = _losses.BCEWithLogits.apply(z, t, reduction="none", with_grad=grad)
    if pw is not None:
        # (1 - t)·z + (1 + (pw - 1)·t)·softplus(-z) = bce(z, t) + (pw - 1)·t·softplus(-z), and
        # softplus(-z) = bce(z, 1): two exact log1p forms, no cancellation at large |z|.
        with z.device.activate():
            ones = Tensor._wrap(z.device.xp.ones(z.shape, dtype=z.dtype), z.device)
        softplus_neg = _losses.BCEWithLogits.apply(z, ones, reduction="none", with_grad=grad)
        loss = loss + (pw - 1) * t * softplus_neg
    if w is not None:
        loss = loss * w
    return _reduce(loss, reduction)


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


def _class_weight(op: str, weight: Any, x: Tensor) -> Tensor:
    w = _loss_weight(op, weight, x)
    c = x.shape[1]
    if w.shape != (c,):
        raise ValueError(f"{op}: weight must hold one value per class, shape ({c},) for logits "
                         f"with {c} classes, got shape {w.shape}")
    return w


def _label_arrays(xp: Any, lab: Any, c: int, ignore_index: int, op: str,
                  weight: Tensor | None) -> tuple:
    """(rows kept, their columns, row numbers, row weights or None) of checked labels."""
    _losses.check_labels(xp, lab, c, ignore_index, op)
    keep = lab != ignore_index
    cols = xp.where(keep, lab, 0)  # any valid column for ignored rows; masked below
    rows = xp.arange(lab.shape[0])
    row_w = None if weight is None else weight.data[cols]
    return keep, cols, rows, row_w


def _mean_scale(xp: Any, keep: Any, row_w: Any, acc: Any) -> Any:
    """1 / (the kept rows' weight), as a 0-d array of ``acc``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        kept = keep.astype(acc) if row_w is None else xp.where(keep, row_w, 0).astype(acc)
        denom = kept.sum()
        # NaN when nothing is kept or the kept weights sum to 0 (PyTorch's 0/0). A product,
        # not a quotient: the NaN then reaches only rows that were kept (where above).
        return xp.asarray(xp.where(denom == 0, np.nan, 1 / denom), dtype=acc)


def _class_loss(op: str, logp: Tensor, labels: Tensor, weight: Tensor | None, ignore_index: int,
                reduction: str, smoothing: float = 0.0) -> Tensor:
    """PyTorch's nll_loss / label-smoothed cross_entropy on log-probabilities (M, C), from ops.

    Row i with label y (w = 1 without class weights) loses
    ``(1 - ε)·(-w[y]·logp[i, y]) + ε/C·(-Σ_c w[c]·logp[i, c])``, and 0 if y == ignore_index;
    "mean" divides the sum by Σ w[y] over the rows that are not ignored (0/0 = NaN if none).
    """
    dev, xp = logp.device, logp.device.xp
    m, c = logp.shape
    with dev.activate():  # array math outside any op: run it on logp's GPU (one gg.compile step)
        keep, cols, rows, row_w = traced_call(_label_arrays, xp, labels.data, c,
                                              int(ignore_index), op, weight)
    # The labels are checked: index directly (getitem would bounds-check them again, syncing).
    loss = -GetItem.apply(logp, index=(rows, cols))
    if row_w is not None:
        loss = loss * Tensor._wrap(row_w, dev)
    if smoothing:
        spread = logp if weight is None else logp * weight
        loss = loss * (1.0 - smoothing) - _ops.sum(spread, axis=1) * (smoothing / c)
    # where (not a 0/1 product) so ignored rows get an exact 0 gradient even when "mean" is NaN
    loss = _ops.where(Tensor._wrap(keep, dev), loss, 0.0)
    if reduction == "none":
        return loss
    acc = np.dtype(np.float32) if logp.dtype.itemsize < 4 else logp.dtype  # as the fused kernels
    total = _ops.sum(loss if loss.dtype == acc else _ops.astype(loss, acc))
    if reduction == "mean":
        with dev.activate():
            scale = traced_call(_mean_scale, xp, keep, row_w, acc)
        total = total * Tensor._wrap(scale, dev)
    if total.dtype == logp.dtype:
        return total
    with np.errstate(over="ignore"):  # a half-precision sum past 65504 is inf, as in PyTorch
        return _ops.astype(total, logp.dtype)


def cross_entropy(input: Any, target: Any, reduction: str = "mean",  # noqa: A002
                  ignore_index: int = -100, *, weight: Any = None,
                  label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy of logits ``(N, C)`` against integer labels ``(N,)``.

    Also accepts ``(C,)`` logits with a 0-d label and ``(N, C, d1, ...)`` logits with labels
    ``(N, d1, ...)``. Rows whose label equals ``ignore_index`` contribute nothing, and "mean"
    divides by the number of the other rows (NaN if there are none, like PyTorch, with a zero
    gradient). Labels outside ``[0, C)`` raise ValueError on every device; float labels raise
    TypeError.

    ``weight`` (shape (C,)) scales each row's loss by its label's weight, and "mean" then divides
    by the summed weights of the rows not ignored. ``label_smoothing`` ε in [0, 1] mixes in the
    uniform distribution: ``(1 - ε)·nll + ε/C·Σ_c w[c]·(-log_softmax)[c]``. Both follow PyTorch
    exactly; unlike PyTorch, they are keyword-only (the third positional argument is
    ``reduction``). The defaults run the fused kernel; either option runs ``log_softmax`` and
    indexing ops instead (same on every device, differentiable to any order).
    """
    op = "cross_entropy"
    _check_reduction(op, reduction)
    smoothing = _check_label_smoothing(op, label_smoothing)
    x, labels, shape = _class_problem(op, input, target, ignore_index)
    if weight is None and smoothing == 0.0:
        loss = _losses.CrossEntropy.apply(x, labels, ignore_index=int(ignore_index),
                                          reduction=reduction, with_grad=_will_differentiate(x))
    else:
        w = None if weight is None else _class_weight(op, weight, x)
        loss = _class_loss(op, _ops.log_softmax(x, axis=-1), labels, w, ignore_index, reduction,
                           smoothing)
    if reduction == "none" and loss.shape != shape:
        loss = _ops.reshape(loss, shape)
    return loss


def nll_loss(input: Any, target: Any, reduction: str = "mean",  # noqa: A002
             ignore_index: int = -100, *, weight: Any = None) -> Tensor:
    """Negative log-likelihood of log-probabilities (e.g. ``log_softmax`` output) at the labels.

    ``weight`` (shape (C,), keyword-only) scales each row by its label's weight and "mean" divides
    by their sum, as in PyTorch. ``nll_loss(log_softmax(z), y)`` equals ``cross_entropy(z, y)``;
    prefer the latter, which runs one fused pass.
    """
    op = "nll_loss"
    _check_reduction(op, reduction)
    x, labels, shape = _class_problem(op, input, target, ignore_index)
    w = None if weight is None else _class_weight(op, weight, x)
    loss = _class_loss(op, x, labels, w, ignore_index, reduction)
    if reduction == "none" and loss.shape != shape:
        loss = _ops.reshape(loss, shape)
    return loss


# The layers' functional forms live beside their modules in gpugrad.nn, which imports this file;
# importing them last means only the helpers above exist when nn needs them, in either import order.
from .nn.embedding import embedding  # noqa: E402
from .nn.normalization import batch_norm, layer_norm  # noqa: E402
