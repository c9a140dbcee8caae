"""Floating-point warnings off inside ops: an inf or NaN result *is* the answer (``exp(1000.)``
is inf, as in PyTorch), not something to warn about. NumPy's ``np.errstate`` costs about a
microsecond per use, a quarter of an op's whole tape overhead, so where NumPy exposes it the
context variable behind ``errstate`` is set directly (the same thing, ~20x cheaper)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["quiet", "restore"]

try:  # NumPy >= 2: errstate is a context variable holding an "extobj"
    from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj

    _IGNORE = _make_extobj(all="ignore")

    def quiet() -> Any:
        """Silence floating-point warnings until ``restore(token)``; returns the token."""
        return _extobj_contextvar.set(_IGNORE)

    def restore(token: Any) -> None:
        _extobj_contextvar.reset(token)

except (ImportError, AttributeError, TypeError):  # NumPy 1.x: the public context manager

    def quiet() -> Any:
        state = np.errstate(all="ignore")
        state.__enter__()
        return state

    def restore(token: Any) -> None:
        token.__exit__(None, None, None)
