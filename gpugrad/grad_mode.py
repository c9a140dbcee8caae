"""Grad mode: whether ``Function.apply`` records nodes, per thread, and the ``no_grad`` /
``enable_grad`` context managers and decorators that set it.

The state is one thread-local flag: ``Function.apply`` and the backward walk read and set
``_grad_mode.enabled`` directly (and ``gg.compile`` keys its programs on it), so reading it costs
one attribute access. ``gpugrad.autograd`` re-exports every name here.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

__all__ = ["enable_grad", "is_grad_enabled", "no_grad"]


class _GradMode(threading.local):
    enabled = True

    def __init__(self) -> None:
        # The modes to restore, one per open ``with`` block of this thread. Kept per thread, not
        # per context-manager object, so one object can be entered nested or from several threads.
        self.saved: list[bool] = []


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    return _grad_mode.enabled


class _SetGradMode:
    """Context manager and decorator (``@gg.no_grad()`` or ``@gg.no_grad``) that sets grad mode
    for the current thread."""

    _mode: bool

    def __new__(cls, func: Callable | None = None):
        self = super().__new__(cls)
        return self if func is None else self(func)  # the bare ``@gg.no_grad`` decorator

    def __enter__(self) -> None:
        _grad_mode.saved.append(_grad_mode.enabled)
        _grad_mode.enabled = self._mode

    def __exit__(self, *exc: object) -> None:
        _grad_mode.enabled = _grad_mode.saved.pop()

    def __call__(self, func):
        mode = self._mode

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            prev = _grad_mode.enabled
            _grad_mode.enabled = mode
            try:
                return func(*args, **kwargs)
            finally:
                _grad_mode.enabled = prev

        return wrapper


class no_grad(_SetGradMode):  # noqa: N801 - named like torch.no_grad
    """Disable recording: ``with gg.no_grad():``, ``@gg.no_grad()`` or ``@gg.no_grad``."""

    _mode = False


class enable_grad(_SetGradMode):  # noqa: N801
    """Re-enable recording inside a ``no_grad`` region."""

    _mode = True
