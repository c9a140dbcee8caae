"""Multi-class losses on integer labels: softmax ``cross_entropy`` (the fused kernel) and
``nll_loss`` on log-probabilities, with PyTorch's ``ignore_index``, class ``weight`` and
``label_smoothing``. The Function's forward beside its derivative rule, then the wrappers.

The defaults run the fused entry point of the logits' device, which computes the gradient in the
same pass when it will be needed (see ``gpugrad.ops.losses``). The options are composed from
``log_softmax`` and indexing ops instead (same on every device, differentiable to any order). In
graph mode the rule is ``softmax(logits) - onehot`` from gpugrad ops. What is saved: the logits,
which the caller normally still holds, so a training step keeps no extra memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Function, traced_call
from ..backend.config import fused_ops
from ..backend.errors import check_labels
from ..tensor import Tensor
from ._coerce import float_input
from ._loss_args import (
    check_label_smoothing,
    check_reduction,
    loss_weight,
    same_device,
    will_differentiate,
)
from .activations import log_softmax
from .elementwise import where
from .indexing import GetItem
from .reductions import sum
from .shape import astype, reshape, transpose


def _scale_in_place(d, g, reduction: str):
    """``d *= g`` (broadcast over the class axis for per-row losses); d is owned by the caller."""
    if reduction == "none" and d.ndim == 2 and g.ndim == 1:
        d *= g[:, None]
    else:
        d *= g
    return d


class CrossEntropy(Function):
    """Softmax cross-entropy of (N, C) logits against (N,) integer labels."""

    save_inputs = (0,)

    def forward(self, logits, labels, ignore_index=-100, reduction="mean", with_grad=False):
        self.labels, self.ignore_index, self.reduction = labels, ignore_index, reduction
        loss, d = fused_ops(self.device.backend).softmax_cross_entropy(
            logits, labels, ignore_index, reduction, with_grad)
        self.dlogits = d
        return loss

    def backward(self, ops, g, logits):
        if g.__class__ is Tensor:
            return self._graph_backward(ops, g, logits), None
        d = self.dlogits
        if d is not None:
            self.dlogits = None  # consumed: scaled in place and handed on
            return _scale_in_place(d, g, self.reduction), None
        return fused_ops(self.device.backend).softmax_cross_entropy_backward(
            logits, self.labels, self.ignore_index, self.reduction, g), None

    def _graph_backward(self, ops, g, logits):
        """(softmax(logits) - onehot) * row weight * g, built from gpugrad ops (differentiable)."""
        xp, labels = self.xp, self.labels
        n, c = logits.shape
        valid = labels != self.ignore_index
        onehot = xp.zeros((n, c), dtype=logits.dtype)
        onehot[xp.arange(n), xp.where(valid, labels, 0)] = 1
        w = valid.astype(logits.dtype)
        if self.reduction == "mean":  # all rows ignored: zero gradient, like the forward pass
            w = w / xp.maximum(valid.sum(), 1).astype(logits.dtype)
        onehot *= valid[:, None]
        d = (ops.softmax(logits, axis=-1) - onehot) * w[:, None]
        if self.reduction == "none":
            return d * g.reshape((n, 1))
        return d * g


# -- public wrappers -------------------------------------------------------------------------------
def _class_problem(op: str, input: Any, target: Any, ignore_index: int):  # noqa: A002
    """Flatten (N, C), (C,) or (N, C, d1, ...) scores to rows of C, with labels to match.

    Returns (scores (M, C), labels (M,) int64 Tensor, output shape for reduction="none").
    """
    x = float_input(op, input, "logits")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{op}: ignore_index must be an int, got {ignore_index!r}")
    if target.__class__ is not Tensor:
        target = Tensor(target, device=x.device)
    else:
        same_device(op, x, target, "labels")
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
        x = reshape(x, (1, c))
    elif x.ndim > 2:  # classes last, then one row per position
        x = reshape(transpose(x, (0, *range(2, x.ndim), 1)), (-1, c))
    labels = target.data
    if labels.dtype != np.int64 or labels.ndim != 1:
        with x.device.activate():  # a cast or copy, on the labels' GPU
            labels = labels.astype(np.int64, copy=False).reshape(-1)
    return x, Tensor._wrap(labels, x.device), expected


def _class_weight(op: str, weight: Any, x: Tensor) -> Tensor:
    w = loss_weight(op, weight, x)
    c = x.shape[1]
    if w.shape != (c,):
        raise ValueError(f"{op}: weight must hold one value per class, shape ({c},) for logits "
                         f"with {c} classes, got shape {w.shape}")
    return w


def _label_arrays(xp: Any, lab: Any, c: int, ignore_index: int, op: str,
                  weight: Tensor | None) -> tuple:
    """(rows kept, their columns, row numbers, row weights or None) of checked labels."""
    check_labels(lab, c, ignore_index, op)
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
        loss = loss * (1.0 - smoothing) - sum(spread, axis=1) * (smoothing / c)
    # where (not a 0/1 product) so ignored rows get an exact 0 gradient even when "mean" is NaN
    loss = where(Tensor._wrap(keep, dev), loss, 0.0)
    if reduction == "none":
        return loss
    acc = np.dtype(np.float32) if logp.dtype.itemsize < 4 else logp.dtype  # as the fused kernels
    total = sum(loss if loss.dtype == acc else astype(loss, acc))
    if reduction == "mean":
        with dev.activate():
            scale = traced_call(_mean_scale, xp, keep, row_w, acc)
        total = total * Tensor._wrap(scale, dev)
    if total.dtype == logp.dtype:
        return total
    with np.errstate(over="ignore"):  # a half-precision sum past 65504 is inf, as in PyTorch
        return astype(total, logp.dtype)


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
    check_reduction(op, reduction)
    smoothing = check_label_smoothing(op, label_smoothing)
    x, labels, shape = _class_problem(op, input, target, ignore_index)
    if weight is None and smoothing == 0.0:
        loss = CrossEntropy.apply(x, labels, ignore_index=int(ignore_index),
                                          reduction=reduction, with_grad=will_differentiate(x))
    else:
        w = None if weight is None else _class_weight(op, weight, x)
        loss = _class_loss(op, log_softmax(x, axis=-1), labels, w, ignore_index, reduction,
                           smoothing)
    if reduction == "none" and loss.shape != shape:
        loss = reshape(loss, shape)
    return loss


def nll_loss(input: Any, target: Any, reduction: str = "mean",  # noqa: A002
             ignore_index: int = -100, *, weight: Any = None) -> Tensor:
    """Negative log-likelihood of log-probabilities (e.g. ``log_softmax`` output) at the labels.

    ``weight`` (shape (C,), keyword-only) scales each row by its label's weight and "mean" divides
    by their sum, as in PyTorch. ``nll_loss(log_softmax(z), y)`` equals ``cross_entropy(z, y)``;
    prefer the latter, which runs one fused pass.
    """
    op = "nll_loss"
    check_reduction(op, reduction)
    x, labels, shape = _class_problem(op, input, target, ignore_index)
    w = None if weight is None else _class_weight(op, weight, x)
    loss = _class_loss(op, x, labels, w, ignore_index, reduction)
    if reduction == "none" and loss.shape != shape:
        loss = reshape(loss, shape)
    return loss
