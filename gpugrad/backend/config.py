"""The one switch between the fused kernels and the reference implementation of the fused ops.

``GPUGRAD_FUSED=0`` (or ``set_fused(False)``) makes every fused op run its reference version
(``fused_reference``: the same math written once against the array module) on every device, so
the CUDA kernels can be compared with it on the same GPU. On the CPU the reference *is* the fused
path, so the switch changes nothing there.
"""

from __future__ import annotations

import os
from typing import Any

_FUSED = os.environ.get("GPUGRAD_FUSED", "1") != "0"


def fused_enabled() -> bool:
    """Whether ops use the fused kernels (``GPUGRAD_FUSED=0`` turns them off, for comparison)."""
    return _FUSED


def set_fused(enabled: bool) -> None:
    global _FUSED
    _FUSED = bool(enabled)


def fused_ops(backend: Any) -> Any:
    """The fused-op entry points ops call on ``backend``: its kernels (``backend.fused``) while
    the switch is on, else the array-module reference (``backend.reference``)."""
    return backend.fused if _FUSED else backend.reference
