"""Devices and their backends. This package is the only place that imports cupy."""

from . import cuda_runtime, host_malloc
from .config import fused_enabled, set_fused
from .device import Device, cpu, default_device, device, set_default_device
from .errors import DeviceError
from .numpy_backend import host_array

host_malloc.configure()  # before the first step's arrays: see host_malloc

__all__ = [
    "Device",
    "DeviceError",
    "cpu",
    "cuda_runtime",
    "default_device",
    "device",
    "fused_enabled",
    "host_array",
    "set_default_device",
    "set_fused",
]
