"""Normalization layers, like ``torch.nn``: ``LayerNorm`` and ``BatchNorm1d``. Their functional
forms ``layer_norm`` and ``batch_norm`` (and the math both share) are in
``gpugrad.ops.normalization``; they are re-exported here for existing imports.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..autograd import traced_call
from ..backend import device as _device
from ..creation import empty, ones, zeros
from ..ops._coerce import float_input
from ..ops.normalization import (
    batch_norm,
    batch_norm_checked,
    check_batch_input,
    check_batch_params,
    check_param,
    layer_norm,
    normalized_shape_arg,
)
from ..tensor import Tensor
from . import init
from .module import Module, Parameter

__all__ = ["BatchNorm1d", "LayerNorm", "batch_norm", "layer_norm"]


class LayerNorm(Module):
    """``torch.nn.LayerNorm``: normalise each sample over its last ``len(normalized_shape)`` dims
    with the biased variance, then apply an elementwise affine map (weight ones, bias zeros)."""

    def __init__(self, normalized_shape: Any, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.normalized_shape = normalized_shape_arg("LayerNorm", normalized_shape)
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
        x = float_input("LayerNorm", x)
        shape, k = self.normalized_shape, len(self.normalized_shape)
        if x.ndim < k or x.shape[x.ndim - k:] != shape:
            raise ValueError(f"LayerNorm: the last {k} dim(s) of the input must be {shape} "
                             f"(normalized_shape), got input of shape {x.shape}")
        return layer_norm(x, shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


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
                    t.writable_data()[...] = value  # never into a state_dict() snapshot

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = float_input(self._op, x)
        check_batch_input(f"{self._op}({self.num_features})", x, self.num_features)
        training = self.training or self.running_mean is None
        if training and x.size // x.shape[1] <= 1:  # checked before the buffers change
            raise ValueError(f"{self._op}: expected more than 1 value per channel when "
                             f"training, got input of shape {x.shape}")
        factor: Any = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            nbt = self.num_batches_tracked
            # every check before the counter moves: a failed call changes nothing
            check_batch_params(self._op, x, self.running_mean, self.running_var, self.weight,
                                self.bias)
            check_param(self._op, "num_batches_tracked", nbt, (), x)
            factor = traced_call(_count_batch, nbt, self.momentum)  # one gg.compile step
        # train(): batch statistics, running ones updated; eval(): the running statistics --
        # or, without track_running_stats (no buffers), batch statistics in both modes
        return batch_norm_checked(self._op, x, self.running_mean, self.running_var, self.weight,
                           self.bias, training, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


def _count_batch(nbt: Tensor, momentum: float | None) -> Any:
    """``num_batches_tracked += 1`` on the device; the running-stat factor: ``momentum``, or
    1 / batches seen (a 0-d array or NumPy scalar) for the cumulative average."""
    with nbt.device.activate():
        count = nbt.writable_data()  # never into a state_dict() snapshot
        count += 1  # on the device: no host sync
        if momentum is None:  # cumulative moving average: 1 / batches seen
            return 1.0 / count.astype(np.float64)  # a 0-d array (CuPy) or a scalar
    return momentum


def _float_dtype(op: str, dtype: Any) -> np.dtype:
    dt = np.dtype(np.float32 if dtype is None else dtype)
    if dt.kind != "f":
        raise TypeError(f"{op}: dtype must be floating point, got {dt}")
    return dt
