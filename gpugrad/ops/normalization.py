"""Normalization, functional forms (torch's signatures): ``layer_norm`` and ``batch_norm``.

Both are built from ordinary differentiable ops (mean, subtract, multiply, sqrt, divide), so
their gradients -- and higher-order ones under ``create_graph=True`` -- come from the existing
derivative rules. The variance is the two-pass ``mean((x - mean)²)``, the biased estimator that
PyTorch normalises with. Inputs narrower than float32 (float16) are normalised in float32, as
PyTorch does -- ``(x - mean)²`` overflows float16 once ``|x - mean| > 256`` -- and the result is
cast back to the input's dtype.

BatchNorm's running statistics are updated with array math on the buffers' device: nothing is
recorded on the tape and nothing is read back to the host. They are written through
``Tensor.writable_data``, like parameters by the optimizers, so an array someone else holds (a
``state_dict()`` snapshot, a graph that saved it) is never changed under them. The layers
(``nn.LayerNorm``, ``nn.BatchNorm1d``) are in ``gpugrad.nn.normalization``.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..autograd import traced_call
from ..backend import DeviceError
from ..tensor import Tensor
from ._coerce import float_input
from .elementwise import sqrt
from .reductions import mean as _mean
from .shape import astype, reshape


def check_param(op: str, name: str, t: Any, shape: tuple, x: Tensor) -> None:
    if t is None:
        return
    if t.__class__ is not Tensor:
        raise TypeError(f"{op}: {name} must be a Tensor or None, got {type(t).__name__}")
    if t.shape != shape:
        raise ValueError(f"{op}: {name} must have shape {shape}, got {t.shape} (input shape "
                         f"{x.shape})")
    if t.device is not x.device:
        raise DeviceError(f"{op}: input is on {x.device} but {name} is on {t.device}; move them "
                          "to one device with .to(device) first")


def _upcast(t: Tensor | None) -> Tensor | None:
    """``t`` in float32 when its dtype is narrower (float16), through the differentiable cast;
    otherwise ``t`` itself. Statistics of half-precision data are computed in float32, as in
    PyTorch: float16 overflows (``(x - mean)²`` above 65504) and loses the small variances."""
    if t is None or t.dtype.itemsize >= 4:
        return t
    return astype(t, np.float32)


def _normalize(x: Tensor, axes: tuple[int, ...], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(x - mean) / sqrt(var + eps)`` over ``axes`` (biased variance), with mean and var kept
    (keepdims) for the caller."""
    mean = _mean(x, axis=axes, keepdims=True)
    d = x - mean
    var = _mean(d * d, axis=axes, keepdims=True)
    return d * (1.0 / sqrt(var + eps)), mean, var


def _affine(y: Tensor, weight: Tensor | None, bias: Tensor | None, shape: tuple) -> Tensor:
    if weight is not None:
        y = y * (weight if weight.shape == shape else reshape(weight, shape))
    if bias is not None:
        y = y + (bias if bias.shape == shape else reshape(bias, shape))
    return y


def normalized_shape_arg(op: str, normalized_shape: Any) -> tuple[int, ...]:
    shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) \
        else tuple(normalized_shape)
    if not shape or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0
                        for n in shape):  # 0 is allowed, as in PyTorch: an empty output
        raise ValueError(f"{op}: normalized_shape must be a non-negative int or a non-empty "
                         f"tuple of them, got {normalized_shape!r}")
    return tuple(int(n) for n in shape)


def layer_norm(input: Any, normalized_shape: Any, weight: Tensor | None = None,  # noqa: A002
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise over the last ``len(normalized_shape)`` dims (which must equal
    ``normalized_shape``), then scale by ``weight`` and shift by ``bias`` (both of that shape),
    like ``torch.nn.functional.layer_norm``."""
    op = "layer_norm"
    x = float_input(op, input)
    shape = normalized_shape_arg(op, normalized_shape)
    k = len(shape)
    if x.ndim < k or x.shape[x.ndim - k:] != shape:
        raise ValueError(f"{op}: the last {k} dim(s) of the input must be {shape} "
                         f"(normalized_shape), got input of shape {x.shape}")
    check_param(op, "weight", weight, shape, x)
    check_param(op, "bias", bias, shape, x)
    xc = _upcast(x)  # float16 is normalised (and scaled) in float32, then cast back
    y, _, _ = _normalize(xc, tuple(range(x.ndim - k, x.ndim)), float(eps))
    y = _affine(y, _upcast(weight), _upcast(bias), shape)
    return y if xc is x else astype(y, x.dtype)


def _update_running(running: Tensor, batch, factor: Any) -> None:
    """``running = (1 - factor)·running + factor·batch`` on the running tensor's device: plain
    array math (not recorded), written through ``writable_data`` (never into an array someone
    else holds). ``factor`` -- a Python float, a NumPy scalar or a 0-d array -- is first made a
    0-d array of the computation's dtype, so every kind takes the same path and rounds alike on
    both devices (NumPy hands back a scalar where CuPy keeps a 0-d array). The arithmetic is in
    at least float32 (float16 buffers are rounded once, at the end, as PyTorch does)."""
    ct = np.promote_types(running.dtype, np.float32)
    with running.device.activate():
        xp = running.device.xp
        f = xp.asarray(factor, dtype=ct)
        batch = batch.astype(ct, copy=False)
        arr = running.writable_data()
        if arr.dtype == ct:
            arr *= 1 - f
            arr += f * batch
        else:
            arr[...] = arr.astype(ct) * (1 - f) + f * batch


def _update_running_stats(running_mean: Tensor | None, running_var: Tensor | None, mean: Any,
                          var: Any, n: int, factor: Any) -> None:
    """Move the running statistics towards the batch's (the variance unbiased, as PyTorch
    keeps); ``mean``/``var`` are the keepdims arrays of the normalisation."""
    c = mean.size
    if running_mean is not None:
        _update_running(running_mean, mean.reshape(c), factor)
    if running_var is not None:
        with running_var.device.activate():
            unbiased = var.reshape(c) * (n / (n - 1))
        _update_running(running_var, unbiased, factor)


def check_batch_params(op: str, x: Tensor, running_mean: Tensor | None,
                        running_var: Tensor | None, weight: Tensor | None,
                        bias: Tensor | None) -> None:
    c = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        check_param(op, name, t, (c,), x)


def batch_norm_checked(op: str, x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                weight: Tensor | None, bias: Tensor | None, training: bool, factor: Any,
                eps: float) -> Tensor:
    """Batch normalisation over every dim but 1 (the channels) of an (N, C, ...) input; float16
    input is normalised in float32 and the result cast back."""
    c = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, c) + (1,) * (x.ndim - 2)  # a per-channel vector, broadcast against the input
    check_batch_params(op, x, running_mean, running_var, weight, bias)
    xc = _upcast(x)
    if training:
        n = x.size // c
        if n <= 1:
            raise ValueError(f"{op}: expected more than 1 value per channel when training, got "
                             f"input of shape {x.shape}")
        y, mean, var = _normalize(xc, axes, eps)
        if running_mean is not None or running_var is not None:  # one gg.compile step
            traced_call(_update_running_stats, running_mean, running_var, mean.data, var.data,
                        n, factor)
    else:
        if running_mean is None or running_var is None:
            raise ValueError(f"{op}: running_mean and running_var are needed when not training "
                             f"(input shape {x.shape})")
        rm = reshape(_upcast(running_mean.detach()), shape)
        rv = reshape(_upcast(running_var.detach()), shape)
        y = (xc - rm) * (1.0 / sqrt(rv + eps))
    y = _affine(y, _upcast(weight), _upcast(bias), shape)
    return y if xc is x else astype(y, x.dtype)


def check_batch_input(op: str, x: Tensor, num_features: int | None) -> None:
    if x.ndim not in (2, 3) or x.shape[1] == 0 or (num_features is not None
                                                    and x.shape[1] != num_features):
        c = "C" if num_features is None else num_features
        raise ValueError(f"{op}: expected input of shape (N, {c}) or (N, {c}, L), got "
                         f"{x.shape}")


def batch_norm(input: Any, running_mean: Tensor | None, running_var: Tensor | None,  # noqa: A002
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """``torch.nn.functional.batch_norm`` for (N, C) or (N, C, L) input: with ``training`` the
    batch statistics normalise (biased variance) and, when given, ``running_mean`` and
    ``running_var`` move towards them by ``momentum`` (the variance unbiased), in place; otherwise
    the running statistics normalise."""
    op = "batch_norm"
    x = float_input(op, input)
    check_batch_input(op, x, None)
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"{op}: momentum must be a float, got {momentum!r}")
    return batch_norm_checked(op, x, running_mean, running_var, weight, bias, bool(training),
                       float(momentum), float(eps))
