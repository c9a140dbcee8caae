"""Devices and their backends. This package is the only place that imports cupy."""

import os

from . import cuda_runtime
from .device import Device, cpu, default_device, device, set_default_device
from .errors import DeviceError

_FUSED = os.environ.get("GPUGRAD_FUSED", "1") != "0"


def fused_enabled() -> bool:
    """Whether ops use the fused kernels (``GPUGRAD_FUSED=0`` turns them off, for comparison)."""
    return _FUSED


def set_fused(enabled: bool) -> None:
    global _FUSED
    _FUSED = bool(enabled)


def device_array_to_host(obj):
    """A NumPy copy of any GPU array (``__cuda_array_interface__``): CuPy's own, or another
    library's (torch, numba), which has no ``.get()``."""
    if hasattr(obj, "get"):
        return obj.get()
    import cupy

    return cupy.asnumpy(cupy.asarray(obj))

__all__ = [
    "Device",
    "DeviceError",
    "cpu",
    "cuda_runtime",
    "default_device",
    "device",
    "device_array_to_host",
    "fused_enabled",
    "set_fused",
    "set_default_device",
]
