"""Normalization layers, like ``torch.nn``: ``LayerNorm`` and ``BatchNorm1d``, and their functional
forms ``layer_norm`` and ``batch_norm`` (torch's signatures).

Both are built from ordinary differentiable ops (mean, subtract, multiply, sqrt, divide), so
their gradients -- and higher-order ones under ``create_graph=True`` -- come from the existing
derivative rules. The variance is the two-pass ``mean((x - mean)²)``, the biased estimator that
PyTorch normalises with. Inputs narrower than float32 (float16) are normalised in float32, as
PyTorch does -- ``(x - mean)²`` overflows float16 once ``|x - mean| > 256`` -- and the result is
cast back to the input's dtype.

BatchNorm's running statistics are updated with array math on the buffers' device: nothing is
recorded on the tape and nothing is read back to the host. They are written through
``Tensor._private_array``, like parameters by the optimizers, so an array someone else holds (a
``state_dict()`` snapshot, a graph that saved it) is never changed under them.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .. import ops
from ..backend import DeviceError
from ..backend import device as _device
from ..creation import empty, ones, zeros
from ..functional import _float_input
from ..tensor import Tensor
from . import init
from .module import Module, Parameter

__all__ = ["BatchNorm1d", "LayerNorm", "batch_norm", "layer_norm"]


def _check_param(op: str, name: str, t: Any, shape: tuple, x: Tensor) -> None:
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
    return ops.astype(t, np.float32)


def _normalize(x: Tensor, axes: tuple[int, ...], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(x - mean) / sqrt(var + eps)`` over ``axes`` (biased variance), with mean and var kept
    (keepdims) for the caller."""
    mean = ops.mean(x, axis=axes, keepdims=True)
    d = x - mean
    var = ops.mean(d * d, axis=axes, keepdims=True)
    return d * (1.0 / ops.sqrt(var + eps)), mean, var


def _affine(y: Tensor, weight: Tensor | None, bias: Tensor | None, shape: tuple) -> Tensor:
    if weight is not None:
        y = y * (weight if weight.shape == shape else ops.reshape(weight, shape))
    if bias is not None:
        y = y + (bias if bias.shape == shape else ops.reshape(bias, shape))
    return y


def _normalized_shape(op: str, normalized_shape: Any) -> tuple[int, ...]:
    shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) \
        else tuple(normalized_shape)
    if not shape or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0
                        for n in shape):  # 0 is allowed, as in PyTorch: an empty output
        raise ValueError(f"{op}: normalized_shape must be a non-negative int or a non-empty "
                         f"tuple of them, got {normalized_shape!r}")
    return tuple(int(n) for n in shape)


# -- LayerNorm --------------------------------------------------------------------------------
def layer_norm(input: Any, normalized_shape: Any, weight: Tensor | None = None,  # noqa: A002
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise over the last ``len(normalized_shape)`` dims (which must equal
    ``normalized_shape``), then scale by ``weight`` and shift by ``bias`` (both of that shape),
    like ``torch.nn.functional.layer_norm``."""
    op = "layer_norm"
    x = _float_input(op, input)
    shape = _normalized_shape(op, normalized_shape)
    k = len(shape)
    if x.ndim < k or x.shape[x.ndim - k:] != shape:
        raise ValueError(f"{op}: the last {k} dim(s) of the input must be {shape} "
                         f"(normalized_shape), got input of shape {x.shape}")
    _check_param(op, "weight", weight, shape, x)
    _check_param(op, "bias", bias, shape, x)
    xc = _upcast(x)  # float16 is normalised (and scaled) in float32, then cast back
    y, _, _ = _normalize(xc, tuple(range(x.ndim - k, x.ndim)), float(eps))
    y = _affine(y, _upcast(weight), _upcast(bias), shape)
    return y if xc is x else ops.astype(y, x.dtype)


class LayerNorm(Module):
    """``torch.nn.LayerNorm``: normalise each sample over its last ``len(normalized_shape)`` dims
    with the biased variance, then apply an elementwise affine map (weight ones, bias zeros)."""

    def __init__(self, normalized_shape: Any, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.normalized_shape = _normalized_shape("LayerNorm", normalized_shape)
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        dev, dt = _device(device), _float_dtype("LayerNorm", dtype)
        if self.elementwise_affine:
            self.weight = Parameter(empty(*self.normalized_shape, dtype=dt, device=dev))
            self.bias = Parameter(empty(*self.normalized_shape, dtype=dt, device=dev)) \
                if bias else None
        else:
            self.weight = self.bias = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = _float_input("LayerNorm", x)
        shape, k = self.normalized_shape, len(self.normalized_shape)
        if x.ndim < k or x.shape[x.ndim - k:] != shape:
            raise ValueError(f"LayerNorm: the last {k} dim(s) of the input must be {shape} "
                             f"(normalized_shape), got input of shape {x.shape}")
        return layer_norm(x, shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


# -- BatchNorm --------------------------------------------------------------------------------
def _update_running(running: Tensor, batch, factor: Any) -> None:
    """``running = (1 - factor)·running + factor·batch`` on the running tensor's device: plain
    array math (not recorded), written through ``_private_array`` (never into an array someone
    else holds). ``factor`` -- a Python float, a NumPy scalar or a 0-d array -- is first made a
    0-d array of the computation's dtype, so every kind takes the same path and rounds alike on
    both devices (NumPy hands back a scalar where CuPy keeps a 0-d array). The arithmetic is in
    at least float32 (float16 buffers are rounded once, at the end, as PyTorch does)."""
    ct = np.promote_types(running.dtype, np.float32)
    with running.device.activate():
        xp = running.device.xp
        f = xp.asarray(factor, dtype=ct)
        batch = batch.astype(ct, copy=False)
        arr = running._private_array()
        if arr.dtype == ct:
            arr *= 1 - f
            arr += f * batch
        else:
            arr[...] = arr.astype(ct) * (1 - f) + f * batch


def _check_batch_params(op: str, x: Tensor, running_mean: Tensor | None,
                        running_var: Tensor | None, weight: Tensor | None,
                        bias: Tensor | None) -> None:
    c = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        _check_param(op, name, t, (c,), x)


def _batch_norm(op: str, x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                weight: Tensor | None, bias: Tensor | None, training: bool, factor: Any,
                eps: float) -> Tensor:
    """Batch normalisation over every dim but 1 (the channels) of an (N, C, ...) input; float16
    input is normalised in float32 and the result cast back."""
    c = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, c) + (1,) * (x.ndim - 2)  # a per-channel vector, broadcast against the input
    _check_batch_params(op, x, running_mean, running_var, weight, bias)
    xc = _upcast(x)
    if training:
        n = x.size // c
        if n <= 1:
            raise ValueError(f"{op}: expected more than 1 value per channel when training, got "
                             f"input of shape {x.shape}")
        y, mean, var = _normalize(xc, axes, eps)
        if running_mean is not None:
            _update_running(running_mean, mean.data.reshape(c), factor)
        if running_var is not None:  # the unbiased estimate, as PyTorch keeps
            with x.device.activate():
                unbiased = var.data.reshape(c) * (n / (n - 1))
            _update_running(running_var, unbiased, factor)
    else:
        if running_mean is None or running_var is None:
            raise ValueError(f"{op}: running_mean and running_var are needed when not training "
                             f"(input shape {x.shape})")
        rm = ops.reshape(_upcast(running_mean.detach()), shape)
        rv = ops.reshape(_upcast(running_var.detach()), shape)
        y = (xc - rm) * (1.0 / ops.sqrt(rv + eps))
    y = _affine(y, _upcast(weight), _upcast(bias), shape)
    return y if xc is x else ops.astype(y, x.dtype)


def _check_batch_input(op: str, x: Tensor, num_features: int | None) -> None:
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
    x = _float_input(op, input)
    _check_batch_input(op, x, None)
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"{op}: momentum must be a float, got {momentum!r}")
    return _batch_norm(op, x, running_mean, running_var, weight, bias, bool(training),
                       float(momentum), float(eps))


class BatchNorm1d(Module):
    """``torch.nn.BatchNorm1d`` over (N, C) or (N, C, L) input.

    In ``train()`` mode each channel is normalised with the batch's mean and biased variance, and
    (with ``track_running_stats``) ``running_mean`` / ``running_var`` move towards the batch's
    mean and *unbiased* variance by ``momentum`` -- or, with ``momentum=None``, keep the
    cumulative average over the ``num_batches_tracked`` batches seen. In ``eval()`` mode the
    running statistics normalise. Without ``track_running_stats`` there are no buffers and the
    batch statistics are used in both modes. Buffers update in place on the device (no host
    round trip, nothing recorded for autograd), but never in an array anything else holds: a
    ``state_dict()`` taken earlier keeps its values (unlike torch's, which share memory). The
    state_dict keys are PyTorch's. Float16 input is normalised in float32 and the running
    statistics move in float32, rounded once into the buffers, as in torch.
    """

    _op = "BatchNorm1d"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral) \
                or num_features < 1:
            raise ValueError(f"{self._op}: num_features must be a positive int, got "
                             f"{num_features!r}")
        if momentum is not None and (isinstance(momentum, bool)
                                     or not isinstance(momentum, numbers.Real)):
            raise TypeError(f"{self._op}: momentum must be a float or None, got {momentum!r}")
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dev, dt = _device(device), _float_dtype(self._op, dtype)
        c = self.num_features
        if self.affine:
            self.weight = Parameter(empty(c, dtype=dt, device=dev))
            self.bias = Parameter(empty(c, dtype=dt, device=dev))
        else:
            self.weight = self.bias = None
        if self.track_running_stats:
            self.register_buffer("running_mean", zeros(c, dtype=dt, device=dev))
            self.register_buffer("running_var", ones(c, dtype=dt, device=dev))
            self.register_buffer("num_batches_tracked", zeros((), dtype=np.int64, device=dev))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            for t, value in ((self.running_mean, 0), (self.running_var, 1),
                             (self.num_batches_tracked, 0)):
                with t.device.activate():
                    t._private_array()[...] = value  # never into a state_dict() snapshot

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = _float_input(self._op, x)
        _check_batch_input(f"{self._op}({self.num_features})", x, self.num_features)
        training = self.training or self.running_mean is None
        if training and x.size // x.shape[1] <= 1:  # checked before the buffers change
            raise ValueError(f"{self._op}: expected more than 1 value per channel when "
                             f"training, got input of shape {x.shape}")
        factor: Any = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            nbt = self.num_batches_tracked
            # every check before the counter moves: a failed call changes nothing
            _check_batch_params(self._op, x, self.running_mean, self.running_var, self.weight,
                                self.bias)
            _check_param(self._op, "num_batches_tracked", nbt, (), x)
            with nbt.device.activate():
                count = nbt._private_array()  # never into a state_dict() snapshot
                count += 1  # on the device: no host sync
                if self.momentum is None:  # cumulative moving average: 1 / batches seen
                    factor = 1.0 / count.astype(np.float64)  # a 0-d array (CuPy) or a scalar
        # train(): batch statistics, running ones updated; eval(): the running statistics --
        # or, without track_running_stats (no buffers), batch statistics in both modes
        return _batch_norm(self._op, x, self.running_mean, self.running_var, self.weight,
                           self.bias, training, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


def _float_dtype(op: str, dtype: Any) -> np.dtype:
    dt = np.dtype(np.float32 if dtype is None else dtype)
    if dt.kind != "f":
        raise TypeError(f"{op}: dtype must be floating point, got {dt}")
    return dt
