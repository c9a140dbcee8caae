"""Tensor creation. Random values are drawn on the host from one seeded generator and then moved,
so the same seed gives bit-identical tensors on every device."""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import device as _device
from .backend.rng import host_rng, manual_seed  # noqa: F401 (gg.manual_seed; train.py)
from .tensor import Tensor, as_array, as_dtype


def _shape(shape: tuple) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for n in shape:
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"shape must be non-negative ints, got {shape}")
    return tuple(int(n) for n in shape)


def _dtype(dtype: Any, default=np.float32, op: str = "creation") -> np.dtype:
    return np.dtype(default) if dtype is None else as_dtype(dtype, op)


def _new(array_fn, shape, dtype, device, requires_grad) -> Tensor:
    dev = _device(device)
    with dev.activate():  # CuPy allocates on the current GPU
        t = Tensor._wrap(array_fn(dev.xp), dev)
    return t.requires_grad_() if requires_grad else t


def tensor(data: Any, dtype: Any = None, device: Any = None,
           requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data`` (floats default to float32, ints to int64)."""
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A CPU tensor sharing memory with ``array`` (its dtype kept)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor._wrap(array, _device("cpu"))


def from_dlpack(obj: Any) -> Tensor:
    """A tensor sharing memory with any DLPack producer (NumPy, CuPy, PyTorch, ...)."""
    kind, index = obj.__dlpack_device__()
    dev = _device("cpu") if int(kind) in (1, 3) else _device(f"cuda:{index}")  # 1 CPU, 3 pinned
    return Tensor._wrap(dev.backend.from_dlpack(obj), dev)


def zeros(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    s, dt = _shape(shape), _dtype(dtype, op="zeros")
    return _new(lambda xp: xp.zeros(s, dt), s, dtype, device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    s, dt = _shape(shape), _dtype(dtype, op="ones")
    return _new(lambda xp: xp.ones(s, dt), s, dtype, device, requires_grad)


def empty(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    s, dt = _shape(shape), _dtype(dtype, op="empty")
    return _new(lambda xp: xp.empty(s, dt), s, dtype, device, requires_grad)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    s = _shape((shape,) if isinstance(shape, int) else tuple(shape))
    if dtype is None:
        dtype = as_array(fill_value, device="cpu").dtype
    if not isinstance(fill_value, (int, float, bool, np.generic)):
        # a tensor, array or list (broadcast like NumPy): an array on the target device, which
        # is what CuPy can fill from
        fill_value = as_array(fill_value, device=device, copy=False)
    dt = _dtype(dtype, op="full")
    return _new(lambda xp: xp.full(s, fill_value, dt), s, dtype, device, requires_grad)


def zeros_like(t: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    return zeros(t.shape, dtype=dtype or t.dtype, device=device or t.device,
                 requires_grad=requires_grad)


def ones_like(t: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    return ones(t.shape, dtype=dtype or t.dtype, device=device or t.device,
                requires_grad=requires_grad)


def full_like(t: Tensor, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device,
                requires_grad=requires_grad)


def arange(start, stop=None, step=1, dtype=None, device=None, requires_grad=False) -> Tensor:
    if stop is None:
        start, stop = 0, start
    host = np.arange(start, stop, step)
    dt = _dtype(dtype, np.float32 if host.dtype.kind == "f" else np.int64, op="arange")
    return _new(lambda xp: xp.arange(start, stop, step, dtype=dt), None, dtype, device,
                requires_grad)


def linspace(start, stop, num=50, dtype=None, device=None, requires_grad=False) -> Tensor:
    dt = _dtype(dtype, op="linspace")
    return _new(lambda xp: xp.linspace(start, stop, num, dtype=dt), None, dtype,
                device, requires_grad)


def _random(host: np.ndarray, dtype, device, requires_grad, op: str) -> Tensor:
    dev = _device(device)
    arr = host.astype(_dtype(dtype, op=op), copy=False)
    t = Tensor._wrap(dev.put(arr), dev)
    return t.requires_grad_() if requires_grad else t


def randn(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal samples from the seeded host generator."""
    return _random(host_rng().standard_normal(_shape(shape)), dtype, device, requires_grad,
                   "randn")


def rand(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform [0, 1) samples from the seeded host generator."""
    return _random(host_rng().random(_shape(shape)), dtype, device, requires_grad,
                   "rand")


def randint(low, high=None, size=(), dtype=None, device=None) -> Tensor:
    if high is None:
        low, high = 0, low
    return _random(host_rng().integers(low, high, size=size), dtype or np.int64, device, False,
                   "randint")
