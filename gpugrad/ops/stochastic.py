"""Ops whose result depends on the seeded random stream: ``dropout``.

The mask is not drawn on the host and copied (a host->device copy every step) and not drawn with
``cupy.random`` (a different stream from NumPy's). Each call draws one 64-bit key from the host
generator behind ``gg.manual_seed`` and the device hashes element indices with that key
(``gpugrad.backend.random_bits``): the same seed gives the same mask, bit for bit, on CPU and GPU.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..autograd import Function
from ..backend import random_bits
from ..backend.rng import host_rng
from ..tensor import Tensor


class Dropout(Function):
    """``x * mask * scale`` with ``scale = 1/(1-p)`` (inverted dropout).

    The mask is a function of ``(p, key)`` and the shape, so ``gg.explain``'s replay rebuilds the
    same one. Backward keeps the bool mask (1 byte per element) rather than the float array
    ``mask * scale`` (4 or 8 bytes): a quarter of the memory for float32 activations, for one
    extra multiply pass that costs far less than the hash.
    """

    # gg.compile draws a fresh key on every replay, from the same generator in the same order
    replay_params = {"key": lambda params: draw_key(params["p"])}

    def forward(self, x, p: float, key: tuple[int, int]):
        self.mask = random_bits.keep_mask(self.xp, x.shape, p, key)
        # Scale in x's dtype, so both devices multiply the same two float32 (or float64) numbers.
        self.scale = x.dtype.type(1.0 / (1.0 - p)) if p < 1 else x.dtype.type(0.0)
        out = x * self.mask
        out *= self.scale
        return out

    def backward(self, ops, g):
        return (g * self.mask * self.scale,)


def dropout(input: Any, p: float = 0.5, training: bool = True) -> Tensor:  # noqa: A002
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)``, like
    ``torch.nn.functional.dropout``. ``training=False`` or ``p=0`` returns ``input`` itself.

    The mask comes from a key drawn from the ``gg.manual_seed`` generator and is identical on
    every device; ``p=1`` zeroes everything (gradient zero) and draws no key.
    """
    x = input if input.__class__ is Tensor else Tensor(input)
    what = f"(input shape {x.shape}, dtype {x.dtype})"
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"dropout: p must be a float in [0, 1], got {p!r} {what}")
    p = float(p)
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"dropout: p must be in [0, 1], got {p} {what}")
    if x.dtype.kind != "f":
        raise TypeError(f"dropout: input must be a floating-point tensor, got dtype {x.dtype} "
                        f"(shape {x.shape}, p={p})")
    if x.size >= random_bits.LIMIT:
        raise ValueError(f"dropout: input of shape {x.shape} has {x.size} elements; at most "
                         f"{random_bits.LIMIT - 1} are supported (uint32 counter), p={p}")
    if not training or p == 0.0:
        return x
    if p < 1.0 and 1.0 / (1.0 - p) > float(np.finfo(x.dtype).max):
        # 0 * inf would turn every dropped element into NaN
        raise ValueError(f"dropout: p={p} is too close to 1 for {x.dtype}: the scale 1/(1-p) "
                         f"overflows it (shape {x.shape}); use p=1 or a wider dtype")
    return Dropout.apply(x, p=p, key=draw_key(p))


def draw_key(p: float) -> tuple[int, int]:
    """The mask key of one dropout call: two words from the ``gg.manual_seed`` generator."""
    if p == 1.0:
        return (0, 0)  # unused: everything is dropped, so the random stream is left alone
    lo, hi = host_rng().integers(0, random_bits.LIMIT, size=2, dtype=np.uint64)
    return (int(lo), int(hi))
