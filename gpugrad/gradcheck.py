"""``gradcheck``: compare analytical gradients with central finite differences, in float64."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .autograd import grad
from .tensor import Tensor


class GradcheckError(RuntimeError):
    """Analytical and numerical gradients disagree."""


def gradcheck(fn: Callable[..., Tensor], inputs: Sequence[Tensor] | Tensor, eps: float = 1e-6,
              atol: float = 1e-5, rtol: float = 1e-3, seed: int = 0,
              raise_exception: bool = True) -> bool:
    """Check ``fn``'s gradients with respect to every input that requires grad.

    Inputs are copied to float64. The (possibly non-scalar) output is projected on a fixed random
    direction ``v``, so one backward pass checks the whole vector-Jacobian product ``vᵀJ``.
    """
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    xs = [_float64_copy(t) if isinstance(t, Tensor) and t.dtype.kind == "f" else t
          for t in inputs]
    wrt = [i for i, x in enumerate(xs) if isinstance(x, Tensor) and x.requires_grad]
    if not wrt:
        raise ValueError("gradcheck: no input requires grad")
    out = fn(*xs)
    v_host = np.random.default_rng(seed).standard_normal(out.shape)
    v = out.device.backend.asarray(v_host)

    def project(o: Tensor) -> float:
        with o.device.activate():
            return float((o.data * v).sum())

    analytic = grad((out * Tensor._wrap(v, out.device)).sum(), [xs[i] for i in wrt],
                    allow_unused=True)
    for k, i in enumerate(wrt):
        x = xs[i]
        host = np.asarray(x.device.backend.to_host(x.data))
        a = np.zeros_like(host) if analytic[k] is None else analytic[k].numpy()
        # Written by index, not through a flat reshape: that is a copy when the input (and so
        # ``host``) is Fortran-ordered, transposed or broadcast.
        numeric = np.zeros(host.shape, dtype=host.dtype)
        # Not under no_grad: ``fn`` may itself differentiate (gradcheck of a gradient function).
        for idx in np.ndindex(host.shape):
            orig = host[idx]
            _poke(x, idx, orig + eps)
            plus = project(fn(*xs))
            _poke(x, idx, orig - eps)
            minus = project(fn(*xs))
            _poke(x, idx, orig)
            numeric[idx] = (plus - minus) / (2 * eps)
        bad = np.abs(a - numeric) > atol + rtol * np.abs(numeric)
        if bad.any():
            j = np.unravel_index(int(np.argmax(np.abs(a - numeric) * bad)), host.shape)
            msg = (f"gradcheck: gradient mismatch for input {i} (shape {host.shape}) at index "
                   f"{tuple(int(n) for n in j)}: analytical {a[j]:.8g} vs numerical "
                   f"{numeric[j]:.8g}; {int(bad.sum())} of {host.size} elements exceed "
                   f"atol={atol}, rtol={rtol}; max abs error {np.abs(a - numeric).max():.3g}")
            if raise_exception:
                raise GradcheckError(msg)
            return False
    return True


def _float64_copy(t: Tensor) -> Tensor:
    with t.device.activate():  # CuPy casts on the current GPU
        return Tensor._wrap(t.data.astype(np.float64), t.device, t.requires_grad)


def _poke(x: Tensor, idx: tuple, value) -> None:
    """Write one element of ``x`` in place (outside the graph)."""
    with x.device.activate():
        x.data[idx] = value
