"""Devices: parse ``"cpu" | "cuda" | "cuda:N" | "auto"`` into one shared ``Device`` object each.

A ``Device`` owns its backend (array module plus the few things the Array API lacks). Devices are
interned, so the tensor hot path compares them with ``is``.

CuPy allocates and launches kernels on the *current* GPU, whatever GPU the operands live on, so
everything that touches a CUDA device's arrays runs inside ``device.activate()``: autograd does
it once for every op (``Function.apply``) and every backward node, and the few places that build
or update device arrays outside an op (creation, optimizers, loaders, ...) do it themselves.
"""

from __future__ import annotations

import os
import threading

from .errors import DeviceError
from .numpy_backend import NumpyBackend


class Device:
    __slots__ = ("type", "index", "backend", "xp", "ops", "_context")

    def __init__(self, type_: str, index: int, backend) -> None:
        self.type = type_
        self.index = index
        self.backend = backend
        self.xp = backend.xp
        self.ops = backend.ops  # the array-mode namespace derivative rules receive
        self._context = backend.use()

    def activate(self):
        """Context manager making this device CuPy's current device, so that arrays are allocated
        and kernels launched on it; nothing to do for the CPU. Re-entrant and cheap (cached)::

            with t.device.activate():
                buf = t.device.xp.zeros_like(t.data)
        """
        return self._context

    def __repr__(self) -> str:
        return f"device('{self}')"

    def __str__(self) -> str:
        return "cpu" if self.type == "cpu" else f"cuda:{self.index}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = device(other)
            except (ValueError, DeviceError):
                return False
        return self is other

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def synchronize(self) -> None:
        self.backend.synchronize()

    def put(self, array, dtype=None):
        """``array`` (NumPy, CuPy on any GPU, or another library's GPU array) as an array of this
        device, cast to ``dtype`` if given: the same object when it already is one, else a copy.
        The one way arrays move between devices."""
        return self.backend.asarray(array, dtype=dtype)


DeviceLike = Device | str | None

_CPU = Device("cpu", 0, NumpyBackend())
_cuda_devices: dict[int, Device] = {}
_lock = threading.Lock()


def _parse(spec: str) -> tuple[str, int | None]:
    s = spec.strip().lower()
    if s in ("cpu", "auto"):
        return s, None
    if s == "cuda" or s == "gpu":
        return "cuda", None
    if s.startswith("cuda:"):
        idx = s[5:]
        if idx.isdigit():
            return "cuda", int(idx)
    raise ValueError(
        f"unknown device {spec!r}: expected 'cpu', 'cuda', 'cuda:N' or 'auto'"
    )


def _cuda_device(index: int) -> Device:
    from . import cuda_runtime

    count, reason = cuda_runtime.status()
    if count == 0:
        raise DeviceError(f"CUDA device requested but CUDA is unavailable: {reason}")
    if not 0 <= index < count:
        raise DeviceError(f"cuda:{index} requested but only {count} CUDA device(s) are present")
    with _lock:
        dev = _cuda_devices.get(index)
        if dev is None:
            from .cupy_backend import CupyBackend

            dev = _cuda_devices[index] = Device("cuda", index, CupyBackend(index))
    return dev


def device(spec: DeviceLike = None) -> Device:
    """Return the ``Device`` for ``spec``; ``None`` means the default device."""
    if isinstance(spec, Device):
        return spec
    if spec is None:
        return default_device()
    if not isinstance(spec, str):
        raise TypeError(f"device spec must be a str or Device, got {type(spec).__name__}")
    kind, index = _parse(spec)
    if kind == "cpu":
        return _CPU
    if kind == "auto":
        from . import cuda_runtime

        return _cuda_device(0) if cuda_runtime.status()[0] > 0 else _CPU
    return _cuda_device(0 if index is None else index)


_default: Device | None = None


def default_device() -> Device:
    """The device new tensors go to: ``GPUGRAD_DEVICE`` (read once), else CPU."""
    global _default
    if _default is None:
        _default = device(os.environ.get("GPUGRAD_DEVICE", "cpu"))
    return _default


def set_default_device(spec: DeviceLike) -> None:
    global _default
    _default = device(spec)


def cpu() -> Device:
    return _CPU
