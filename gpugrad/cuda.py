"""``gg.cuda``: CUDA availability, as the backend detected it."""

from __future__ import annotations

from .backend import cuda_runtime
from .backend import device as _device


def is_available() -> bool:
    return cuda_runtime.is_available()


def device_count() -> int:
    return cuda_runtime.device_count()


def unavailable_reason() -> str:
    """Why CUDA is unavailable ("" when it is available)."""
    return cuda_runtime.unavailable_reason()


def synchronize(device=None) -> None:
    _device(device if device is not None else "cuda").synchronize()
