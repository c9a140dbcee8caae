"""Loss Functions: mean squared error, binary cross-entropy (on probabilities and on logits) and
softmax cross-entropy on integer labels. The public wrappers with argument checks live in
``gpugrad.functional``; these classes assume validated inputs.

Cross-entropy and BCE-with-logits run the fused entry points (``device.backend.fused``) unless
``GPUGRAD_FUSED=0``; then a composite of ordinary array math gives the same numbers. When the loss
will be differentiated, forward asks for the gradient in the same pass (``with_grad=True``) and
keeps it on the node; the first array-mode backward scales it *in place* by the upstream gradient
and hands it on, so a training step pays for no second pass and no extra allocation. A later
backward (``retain_graph=True``, or ``gg.explain``'s replay) recomputes it from the saved inputs.
In graph mode (``create_graph=True``) backward rebuilds the gradient from gpugrad ops
(``softmax(logits) - onehot``, ``sigmoid(z) - t``), which is itself differentiable.

What is saved: the inputs the graph-mode rule needs. The logits are the smallest activation of a
network and the caller normally still holds them, so keeping a reference costs no extra memory in
a training step; backward releases it.

PyTorch's extra options (class ``weight``, ``label_smoothing``, ``pos_weight``) are not here: the
wrappers in ``gpugrad.functional`` compose them from ordinary ops (``log_softmax``, indexing, and
these Functions with ``reduction="none"``), so the fused kernels only ever see the defaults.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..backend import fused_enabled
from ..tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def _fused(device):
    """The device's fused module, or None when fused kernels are switched off."""
    return device.backend.fused if fused_enabled() else None


def _reduce(xp, loss, reduction: str):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    # sum / N, NaN for an empty batch (as in PyTorch) without NumPy's "Mean of empty slice"
    return loss.mean() if loss.size else loss.sum() / xp.asarray(0, dtype=loss.dtype)


def _compute_dtype(dtype):
    # Half inputs accumulate in float32, like the fused kernels.
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _scale_in_place(d, g, reduction: str):
    """``d *= g`` (broadcast over the class axis for per-row losses); d is owned by the caller."""
    if reduction == "none" and d.ndim == 2 and g.ndim == 1:
        d *= g[:, None]
    else:
        d *= g
    return d


# -- softmax cross-entropy --------------------------------------------------------------------
def check_labels(xp, labels, num_classes: int, ignore_index: int,
                 op: str = "cross_entropy") -> None:
    """Raise ValueError if any label is outside [0, C) and not ``ignore_index`` (one host sync)."""
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index < 0 or ignore_index >= num_classes:
        bad &= labels != ignore_index
    if bool(bad.any()):
        row = int(xp.argmax(bad))
        raise ValueError(
            f"{op}: label {int(labels[row])} at row {row} is outside [0, {num_classes}) "
            f"and is not ignore_index={ignore_index} (logits have {num_classes} classes)"
        )


def ce_composite(xp, logits, labels, ignore_index: int, reduction: str, with_grad: bool):
    """Softmax cross-entropy from ordinary array math (the ``GPUGRAD_FUSED=0`` path)."""
    n, c = logits.shape
    check_labels(xp, labels, c, ignore_index)
    x = logits.astype(_compute_dtype(logits.dtype), copy=False)
    valid = labels != ignore_index
    safe = xp.where(valid, labels, 0)
    rows = xp.arange(n)
    shifted = x - x.max(axis=1, keepdims=True)
    e = xp.exp(shifted)
    s = e.sum(axis=1)
    loss = xp.where(valid, xp.log(s) - shifted[rows, safe], 0).astype(x.dtype, copy=False)
    count = valid.sum().astype(x.dtype)
    with np.errstate(invalid="ignore", divide="ignore"):  # all rows ignored: 0/0 = nan, as torch
        if reduction == "mean":
            out = loss.sum() / count
        else:
            out = _reduce(xp, loss, reduction)
        if not with_grad:
            return out.astype(logits.dtype, copy=False), None
        e /= s[:, None]
        e[rows, safe] -= 1
        w = valid.astype(x.dtype)
        if reduction == "mean":  # all rows ignored: w is all 0 and stays so (torch's zero grad)
            w /= xp.maximum(count, 1)
        e *= w[:, None]
    return out.astype(logits.dtype, copy=False), e.astype(logits.dtype, copy=False)


def ce_backward_composite(xp, logits, labels, ignore_index: int, reduction: str, gy):
    _, d = ce_composite(xp, logits, labels, ignore_index, reduction, True)
    return _scale_in_place(d, gy, reduction)


class CrossEntropy(Function):
    """Softmax cross-entropy of (N, C) logits against (N,) integer labels."""

    save_inputs = (0,)

    def forward(self, logits, labels, ignore_index=-100, reduction="mean", with_grad=False):
        self.labels, self.ignore_index, self.reduction = labels, ignore_index, reduction
        fused = _fused(self.device)
        if fused is not None:
            loss, d = fused.softmax_cross_entropy(logits, labels, ignore_index, reduction,
                                                  with_grad)
        else:
            loss, d = ce_composite(self.xp, logits, labels, ignore_index, reduction, with_grad)
        self.dlogits = d
        return loss

    def backward(self, ops, g, logits):
        if g.__class__ is Tensor:
            return self._graph_backward(ops, g, logits), None
        d = self.dlogits
        if d is not None:
            self.dlogits = None  # consumed: scaled in place and handed on
            return _scale_in_place(d, g, self.reduction), None
        fused = _fused(self.device)
        if fused is not None:
            return fused.softmax_cross_entropy_backward(
                logits, self.labels, self.ignore_index, self.reduction, g), None
        return ce_backward_composite(self.xp, logits, self.labels, self.ignore_index,
                                     self.reduction, g), None

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


# -- binary cross-entropy on logits -----------------------------------------------------------
def bce_logits_composite(xp, z, t, reduction: str, with_grad: bool):
    """max(z, 0) - z*t + log1p(exp(-|z|)): finite for any finite z (the GPUGRAD_FUSED=0 path)."""
    x = z.astype(_compute_dtype(z.dtype), copy=False)
    tt = t.astype(x.dtype, copy=False)
    loss = xp.maximum(x, 0) - x * tt + xp.log1p(xp.exp(-xp.abs(x)))
    out = _reduce(xp, loss, reduction).astype(z.dtype, copy=False)
    if not with_grad:
        return out, None
    d = xp.tanh(x * 0.5)  # sigmoid(x) = tanh(x/2)/2 + 1/2: never overflows
    d *= 0.5
    d += 0.5
    d -= tt
    if reduction == "mean" and d.size:
        d *= 1.0 / d.size
    return out, d.astype(z.dtype, copy=False)


def bce_logits_backward_composite(xp, z, t, reduction: str, gy):
    _, d = bce_logits_composite(xp, z, t, reduction, True)
    d *= gy
    return d


def _mean_scale(reduction: str, size: int) -> float:
    return 1.0 / size if reduction == "mean" and size else 1.0


class BCEWithLogits(Function):
    save_inputs = (0, 1)

    def forward(self, z, t, reduction="mean", with_grad=False):
        self.reduction = reduction
        fused = _fused(self.device)
        if fused is not None:
            loss, d = fused.bce_with_logits(z, t, reduction, with_grad)
        else:
            loss, d = bce_logits_composite(self.xp, z, t, reduction, with_grad)
        self.dz = d
        return loss

    def backward(self, ops, g, z, t):
        need_z, need_t = self.needs_input_grad
        scale = _mean_scale(self.reduction, z.size)
        gz = gt = None
        if g.__class__ is Tensor:  # graph mode: differentiable composite
            if need_z:
                gz = (ops.sigmoid(z) - t) * (g * scale)
            if need_t:
                gt = -z * (g * scale)
            return gz, gt
        if need_z:
            d = self.dz
            if d is not None:
                self.dz = None
                d *= g
                gz = d
            else:
                fused = _fused(self.device)
                gz = (fused.bce_with_logits_backward(z, t, self.reduction, g) if fused is not None
                      else bce_logits_backward_composite(self.xp, z, t, self.reduction, g))
        if need_t:
            gt = z * (-scale)
            gt *= g
        return gz, gt


# -- binary cross-entropy on probabilities ----------------------------------------------------
class BCE(Function):
    """-(t log p + (1 - t) log(1 - p)) with both logs clamped at -100, like PyTorch."""

    save_inputs = (0, 1)

    def forward(self, p, t, reduction="mean"):
        xp = self.xp
        self.reduction = reduction
        if bool((~((p >= 0) & (p <= 1))).any()):
            raise ValueError(
                f"binary_cross_entropy: every input value must be a probability in [0, 1] "
                f"(input shape {p.shape}, dtype {p.dtype}); for raw scores use "
                "binary_cross_entropy_with_logits"
            )
        x = p.astype(_compute_dtype(p.dtype), copy=False)
        with np.errstate(divide="ignore"):
            logp = xp.maximum(xp.log(x), -100)
            log1mp = xp.maximum(xp.log1p(-x), -100)
        loss = -(t * logp + (1 - t) * log1mp)
        return _reduce(xp, loss, self.reduction).astype(p.dtype, copy=False)

    def backward(self, ops, g, p, t):
        need_p, need_t = self.needs_input_grad
        gs = g * _mean_scale(self.reduction, p.size)
        gp = gt = None
        if need_p:  # PyTorch's rule: (p - t) / max(p (1 - p), 1e-12)
            denom = (1 - p) * p
            denom = ops.where(denom > 1e-12, denom, 1e-12)
            gp = (p - t) / denom * gs
        if need_t:
            with np.errstate(divide="ignore"):
                logp, log1mp = ops.log(p), ops.log(1 - p)
            logp = ops.where(logp > -100, logp, -100)
            log1mp = ops.where(log1mp > -100, log1mp, -100)
            gt = (log1mp - logp) * gs
        return gp, gt


# -- mean squared error -----------------------------------------------------------------------
class MSELoss(Function):
    save_inputs = (0, 1)

    def forward(self, x, t, reduction="mean"):
        self.reduction = reduction
        d = x - t
        d *= d
        return _reduce(self.xp, d, reduction)

    def backward(self, ops, g, x, t):
        need_x, need_t = self.needs_input_grad
        d = x - t
        scale = 2.0 * _mean_scale(self.reduction, x.size)
        if g.__class__ is Tensor:
            gx = d * (g * scale)
        else:
            d *= scale
            d *= g
            gx = d
        return (gx if need_x else None), (-gx if need_t else None)
