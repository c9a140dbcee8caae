"""Argument checks and small helpers shared by the loss modules (``losses``, ``cross_entropy``):
reductions, targets and weights converted onto the input's device with errors that name the op,
the shapes and the dtypes. A leaf module."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import is_grad_enabled
from ..backend import DeviceError
from ..tensor import Tensor
from .reductions import mean, sum
from .shape import astype

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(op: str, reduction: str) -> None:
    if not isinstance(reduction, str):
        # PyTorch's third positional argument is `weight`; here it is `reduction` (kept for the
        # callers written before weights existed), so say how to pass weights instead.
        raise TypeError(f"{op}: reduction must be 'mean', 'sum' or 'none', got a "
                        f"{type(reduction).__name__}; pass weights by keyword (weight=...)")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def check_label_smoothing(op: str, label_smoothing: float) -> float:
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing,
                                                           (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: label_smoothing must be a float in [0, 1], got "
                        f"{label_smoothing!r}")
    if not 0.0 <= label_smoothing <= 1.0:  # also rejects NaN
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    return float(label_smoothing)


def same_device(op: str, a: Tensor, b: Tensor, what: str = "target") -> None:
    if a.device is not b.device:
        raise DeviceError(f"{op}: input is on {a.device} but {what} is on {b.device}; move "
                          "them to one device with .to(device) first")


def float_target(op: str, target: Any, x: Tensor) -> Tensor:
    """``target`` as a tensor on ``x``'s device with ``x``'s dtype and shape (else ValueError)."""
    if target.__class__ is not Tensor:
        target = Tensor(target, dtype=x.dtype, device=x.device)
    else:
        same_device(op, x, target)
        if target.dtype.kind not in "fiub":
            raise TypeError(f"{op}: target must be a real tensor, got dtype {target.dtype}")
        if target.dtype != x.dtype:
            target = astype(target, x.dtype)  # differentiable for float targets
    if target.shape != x.shape:
        raise ValueError(f"{op}: target shape {target.shape} does not match input shape "
                         f"{x.shape}; reshape one of them (e.g. (N,) vs (N, 1))")
    return target


def will_differentiate(x: Tensor) -> bool:
    return x.requires_grad and is_grad_enabled()


def loss_weight(op: str, weight: Any, x: Tensor, what: str = "weight") -> Tensor:
    """``weight`` as a constant tensor on ``x``'s device with ``x``'s dtype.

    Weights are not differentiable, as in PyTorch: one that requires grad is refused rather
    than silently left without a gradient.
    """
    if weight.__class__ is not Tensor:
        weight = Tensor(weight, device=x.device)
    else:
        same_device(op, x, weight, what)
    if weight.dtype.kind != "f":
        raise TypeError(f"{op}: {what} must be a floating-point tensor, got dtype {weight.dtype} "
                        f"(shape {weight.shape}); convert with {what}.astype('float32')")
    if will_differentiate(weight):
        raise RuntimeError(f"{op}: {what} is not differentiable (as in PyTorch) but requires "
                           f"grad; pass {what}.detach()")
    return weight if weight.dtype == x.dtype else astype(weight, x.dtype)


def elementwise_weight(op: str, weight: Any, x: Tensor, what: str) -> Tensor:
    """A weight that broadcasts to ``x``'s shape (per element, or per class along the last dim)."""
    w = loss_weight(op, weight, x, what)
    try:
        fits = np.broadcast_shapes(w.shape, x.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{op}: {what} of shape {w.shape} does not broadcast to the input's "
                         f"shape {x.shape} (per class: shape ({x.shape[-1] if x.ndim else 1},))")
    return w


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    return sum(loss) if reduction == "sum" else mean(loss)


def reduce_array(loss, reduction: str):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    # sum / N, NaN for an empty batch (as in PyTorch) without NumPy's "Mean of empty slice"
    return loss.mean() if loss.size else loss.sum() / loss.dtype.type(0)


def mean_scale(reduction: str, size: int) -> float:
    return 1.0 / size if reduction == "mean" and size else 1.0
