"""Parameter initializers, in place, like ``torch.nn.init``.

Every value is drawn in float64 from the seeded host generator (``gpugrad.backend.rng.host_rng()``,
seeded by ``gg.manual_seed``), cast to the tensor's dtype on the host, then copied to the device.
So the same seed gives bit-identical weights on CPU and GPU, whatever the device's own RNG does.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend.rng import host_rng
from ..tensor import Tensor

__all__ = [
    "calculate_gain",
    "constant_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "normal_",
    "ones_",
    "orthogonal_",
    "trunc_normal_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]


def _fill(t: Tensor, host: np.ndarray) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"init: expected a Tensor, got {type(t).__name__}")
    host = np.ascontiguousarray(host, dtype=t.dtype)
    # Writes into the existing buffer: the tensor object (maybe already given to an optimizer)
    # keeps its identity. No graph is recorded: initialization is not differentiable.
    with t.device.activate():  # the copy into the buffer runs on the tensor's GPU
        t.writable_data()[...] = t.device.put(host)
    return t


def _fans(t: Tensor, op: str) -> tuple[int, int]:
    if t.ndim < 2:
        raise ValueError(f"{op}: fan in and fan out need a tensor with at least 2 dims, got shape "
                         f"{t.shape}")
    receptive = math.prod(t.shape[2:])
    return t.shape[1] * receptive, t.shape[0] * receptive


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for an activation (``torch.nn.init.calculate_gain``)."""
    if nonlinearity in ("linear", "identity", "sigmoid") or nonlinearity.startswith("conv"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def uniform_(t: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    if not a <= b:
        raise ValueError(f"uniform_: need a <= b, got a={a}, b={b}")
    return _fill(t, host_rng().uniform(a, b, size=t.shape))


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    if std < 0:
        raise ValueError(f"normal_: std must be >= 0, got {std}")
    return _fill(t, host_rng().normal(mean, std, size=t.shape))


def constant_(t: Tensor, value: float) -> Tensor:
    return _fill(t, np.full(t.shape, value))


def zeros_(t: Tensor) -> Tensor:
    return constant_(t, 0.0)


def ones_(t: Tensor) -> Tensor:
    return constant_(t, 1.0)


def _kaiming_std(t: Tensor, a: float, mode: str, nonlinearity: str, op: str) -> float:
    fan_in, fan_out = _fans(t, op)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{op}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan = fan_in if mode == "fan_in" else fan_out
    if fan == 0:
        raise ValueError(f"{op}: cannot initialize a tensor of shape {t.shape} (zero fan)")
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(t: Tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu") -> Tensor:
    """U(-bound, bound), bound = gain·sqrt(3 / fan). ``a=sqrt(5)`` is nn.Linear's default."""
    bound = math.sqrt(3.0) * _kaiming_std(t, a, mode, nonlinearity, "kaiming_uniform_")
    return uniform_(t, -bound, bound)


def kaiming_normal_(t: Tensor, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu") -> Tensor:
    return normal_(t, 0.0, _kaiming_std(t, a, mode, nonlinearity, "kaiming_normal_"))


def xavier_uniform_(t: Tensor, gain: float = 1.0) -> Tensor:
    fan_in, fan_out = _fans(t, "xavier_uniform_")
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound)


def xavier_normal_(t: Tensor, gain: float = 1.0) -> Tensor:
    fan_in, fan_out = _fans(t, "xavier_normal_")
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


# Acklam's rational approximation of the standard normal quantile (relative error < 1.2e-9,
# far below float32's resolution): central region and lower tail.
_PPF_A = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
          1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00)
_PPF_B = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
          6.680131188771972e+01, -1.328068155288572e+01, 1.0)
_PPF_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
          -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00)
_PPF_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
          3.754408661907416e+00, 1.0)
_PPF_LOW = 0.02425


def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _norm_ppf(u: np.ndarray) -> np.ndarray:
    """The standard normal quantile of ``u`` in (0, 1), float64, vectorized on the host."""
    u = np.clip(u, np.finfo(np.float64).tiny, 1.0 - np.finfo(np.float64).epsneg)
    out = np.empty_like(u)
    tail = np.minimum(u, 1.0 - u) < _PPF_LOW
    central = ~tail
    q = u[central] - 0.5
    r = q * q
    out[central] = q * np.polyval(_PPF_A, r) / np.polyval(_PPF_B, r)
    lower = u[tail] < 0.5
    q = np.sqrt(-2.0 * np.log(np.where(lower, u[tail], 1.0 - u[tail])))
    z = np.polyval(_PPF_C, q) / np.polyval(_PPF_D, q)
    out[tail] = np.where(lower, z, -z)
    return out


def trunc_normal_(t: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                  b: float = 2.0) -> Tensor:
    """N(mean, std²) restricted to [a, b] (absolute bounds, like ``torch.nn.init.trunc_normal_``).

    Drawn like torch's method, by inverting the CDF: u ~ U(Φ(α), Φ(β)) from the seeded host
    generator, z = Φ⁻¹(u), value = mean + std·z clamped to [a, b], where α, β = (a, b) standardized.
    An interval entirely above the mean is sampled mirrored below it, where Φ keeps its precision,
    so even far-tail intervals give values inside [a, b] with the right distribution.
    """
    mean, std, a, b = float(mean), float(std), float(a), float(b)
    if not std >= 0:
        raise ValueError(f"trunc_normal_: std must be >= 0, got {std}")
    if not a < b:
        raise ValueError(f"trunc_normal_: need a < b, got a={a}, b={b}")
    if std == 0:
        return constant_(t, min(max(mean, a), b))
    lo, hi = (a - mean) / std, (b - mean) / std
    flip = lo > 0
    if flip:
        lo, hi = -hi, -lo
    u = host_rng().uniform(_norm_cdf(lo), _norm_cdf(hi), size=t.shape)
    z = np.clip(_norm_ppf(u), lo, hi)
    return _fill(t, np.clip(mean + std * (-z if flip else z), a, b))


def orthogonal_(t: Tensor, gain: float = 1.0) -> Tensor:
    """A (semi-)orthogonal matrix, like ``torch.nn.init.orthogonal_``: the tensor viewed as
    (shape[0], rest) is the Q of the QR factorization of a standard normal matrix from the seeded
    host generator (of its transpose when it is wide), with Q's columns signed by diag(R) so the
    result is uniformly distributed; then scaled by ``gain``."""
    if t.ndim < 2:
        raise ValueError(f"orthogonal_: only tensors with 2 or more dims are supported, got shape "
                         f"{t.shape}")
    if t.size == 0:
        return t
    rows = t.shape[0]
    cols = t.size // rows
    flat = host_rng().normal(0.0, 1.0, size=(rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return _fill(t, float(gain) * q.reshape(t.shape))
