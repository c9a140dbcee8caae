"""Regression and binary-classification losses: mean squared error and binary cross-entropy (on
probabilities and on logits). Each Function's forward beside its derivative rule, then the public
wrappers (``gpugrad.functional``'s), which check their arguments once, with errors that name the
op, the shapes and the dtypes.

BCE-with-logits runs the fused entry point of its device (``backend.config.fused_ops``). When the
loss will be differentiated, forward asks for the gradient in the same pass (``with_grad=True``)
and keeps it on the node; the first array-mode backward scales it *in place* by the upstream
gradient and hands it on, so a training step pays for no second pass and no extra allocation. A
later backward (``retain_graph=True``, or ``gg.explain``'s replay) recomputes it from the saved
inputs. In graph mode (``create_graph=True``) the rule is built from gpugrad ops
(``sigmoid(z) - t``), which is itself differentiable.

PyTorch's extra options (``weight``, ``pos_weight``) are composed from ordinary ops around these
Functions with ``reduction="none"``, so the fused kernels only ever see the defaults.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Function
from ..backend import checks
from ..backend.config import fused_ops
from ..backend.numerics import compute_dtype
from ..tensor import Tensor
from ._coerce import float_input
from ._loss_args import (
    check_reduction,
    elementwise_weight,
    float_target,
    mean_scale,
    reduce_array,
    reduce_loss,
    will_differentiate,
)


class BCEWithLogits(Function):
    save_inputs = (0, 1)

    def forward(self, z, t, reduction="mean", with_grad=False):
        self.reduction = reduction
        loss, d = fused_ops(self.device.backend).bce_with_logits(z, t, reduction, with_grad)
        self.dz = d
        return loss

    def backward(self, ops, g, z, t):
        need_z, need_t = self.needs_input_grad
        scale = mean_scale(self.reduction, z.size)
        gz = gt = None
        if g.__class__ is Tensor:  # graph mode: the rule from gpugrad ops (differentiable)
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
                gz = fused_ops(self.device.backend).bce_with_logits_backward(z, t, self.reduction,
                                                                             g)
        if need_t:
            gt = z * (-scale)
            gt *= g
        return gz, gt


class BCE(Function):
    """-(t log p + (1 - t) log(1 - p)) with both logs clamped at -100, like PyTorch."""

    save_inputs = (0, 1)

    def forward(self, p, t, reduction="mean"):
        xp = self.xp
        self.reduction = reduction
        shape, dtype = p.shape, p.dtype
        outside = (~((p >= 0) & (p <= 1))).any().reshape(1).astype(np.int64)
        checks.require(outside, lambda f: None if not f[0] else ValueError(  # deferred on a GPU
            f"binary_cross_entropy: every input value must be a probability in [0, 1] "
            f"(input shape {shape}, dtype {dtype}); for raw scores use "
            "binary_cross_entropy_with_logits"))
        x = p.astype(compute_dtype(p.dtype), copy=False)
        with np.errstate(divide="ignore"):
            logp = xp.maximum(xp.log(x), -100)
            log1mp = xp.maximum(xp.log1p(-x), -100)
        loss = -(t * logp + (1 - t) * log1mp)
        return reduce_array(loss, self.reduction).astype(p.dtype, copy=False)

    def backward(self, ops, g, p, t):
        need_p, need_t = self.needs_input_grad
        gs = g * mean_scale(self.reduction, p.size)
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


class MSELoss(Function):
    save_inputs = (0, 1)

    def forward(self, x, t, reduction="mean"):
        self.reduction = reduction
        d = x - t
        d *= d
        return reduce_array(d, reduction)

    def backward(self, ops, g, x, t):
        need_x, need_t = self.needs_input_grad
        d = x - t
        scale = 2.0 * mean_scale(self.reduction, x.size)
        if g.__class__ is Tensor:
            gx = d * (g * scale)
        else:
            d *= scale
            d *= g
            gx = d
        return (gx if need_x else None), (-gx if need_t else None)


# -- public wrappers -------------------------------------------------------------------------------
def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Mean squared error ``(input - target)²``, averaged, summed or per element."""
    check_reduction("mse_loss", reduction)
    x = float_input("mse_loss", input)
    t = float_target("mse_loss", target, x)
    return MSELoss.apply(x, t, reduction=reduction)


def binary_cross_entropy(input: Any, target: Any, reduction: str = "mean", *,  # noqa: A002
                         weight: Any = None) -> Tensor:
    """BCE on probabilities in [0, 1]; both logs are clamped at -100 so p = 0 or 1 stays finite.

    ``weight`` (broadcast to the input's shape) scales each element's loss; "mean" is then the
    plain mean of the weighted losses, as in PyTorch. Prefer ``binary_cross_entropy_with_logits``
    on raw scores: it is exact for large |z|.
    """
    op = "binary_cross_entropy"
    check_reduction(op, reduction)
    p = float_input(op, input)
    t = float_target(op, target, p)
    if weight is None:
        return BCE.apply(p, t, reduction=reduction)
    w = elementwise_weight(op, weight, p, "weight")
    return reduce_loss(BCE.apply(p, t, reduction="none") * w, reduction)


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
    check_reduction(op, reduction)
    z = float_input(op, input)
    t = float_target(op, target, z)
    grad = will_differentiate(z)
    if weight is None and pos_weight is None:
        return BCEWithLogits.apply(z, t, reduction=reduction, with_grad=grad)
    w = None if weight is None else elementwise_weight(op, weight, z, "weight")
    pw = None if pos_weight is None else elementwise_weight(op, pos_weight, z, "pos_weight")
    loss = BCEWithLogits.apply(z, t, reduction="none", with_grad=grad)
    if pw is not None:
        # (1 - t)·z + (1 + (pw - 1)·t)·softplus(-z) = bce(z, t) + (pw - 1)·t·softplus(-z), and
        # softplus(-z) = bce(z, 1): two exact log1p forms, no cancellation at large |z|.
        with z.device.activate():
            ones = Tensor._wrap(z.device.xp.ones(z.shape, dtype=z.dtype), z.device)
        softplus_neg = BCEWithLogits.apply(z, ones, reduction="none", with_grad=grad)
        loss = loss + (pw - 1) * t * softplus_neg
    if w is not None:
        loss = loss * w
    return reduce_loss(loss, reduction)
