"""Floating-point warnings off inside ops: an inf or NaN result *is* the answer (``exp(1000.)``
is inf, as in PyTorch), not something to warn about. NumPy's ``np.errstate`` costs about a
microsecond per use, a quarter of an op's whole tape overhead, so where NumPy exposes it the
context variable behind ``errstate`` is set directly (the same thing, ~20x cheaper)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

__all__ = ["quiet", "restore"]

try:  # NumPy >= 2: errstate is a context variable holding an "extobj"
    from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj

    # C-level callables, no Python frame per op: quiet() returns a token for restore(token).
    quiet = functools.partial(_extobj_contextvar.set, _make_extobj(all="ignore"))
    restore = _extobj_contextvar.reset

except (ImportError, AttributeError, TypeError):  # NumPy 1.x: the public context manager

    def quiet() -> Any:
        state = np.errstate(all="ignore")
        state.__enter__()
        return state

    def restore(token: Any) -> None:
        token.__exit__(None, None, None)
