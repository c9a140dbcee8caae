"""``RMSprop``: torch.optim.RMSprop's defaults and update formulas, in in-place array math on each
parameter's device (Python-float hyper-parameters: no host round trip)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..backend.optim_updates import lerp_
from .optimizer import Optimizer


def rmsprop_update(xp: Any, p: Any, g: Any, square_avg: Any, grad_avg: Any | None,
                   momentum_buffer: Any | None, *, lr: float, alpha: float, eps: float,
                   weight_decay: float, momentum: float, maximize: bool) -> None:
    """One parameter's RMSprop step in place, with torch's operation order. ``grad_avg`` is given
    when centered, ``momentum_buffer`` when momentum > 0."""
    g = -g if maximize else g
    if weight_decay:
        g = g + weight_decay * p
    square_avg *= alpha
    square_avg += (1 - alpha) * g * g
    if grad_avg is not None:  # centered: divide by an estimate of the gradient's std
        lerp_(grad_avg, g, 1 - alpha)
        avg = xp.sqrt(square_avg - grad_avg * grad_avg)  # (a new array even for 0-d params)
    else:
        avg = xp.sqrt(square_avg)
    avg += eps
    if momentum_buffer is not None:
        momentum_buffer *= momentum
        momentum_buffer += g / avg
        p -= lr * momentum_buffer
    else:
        p -= lr * (g / avg)


class RMSprop(Optimizer):
    """RMSprop (Hinton), PyTorch's variant: v = alpha·v + (1 - alpha)·g²; with ``centered`` the
    running mean of g is subtracted (v - ḡ²); then p -= lr·g / (sqrt(v) + eps), or through a
    momentum buffer b = momentum·b + g / (sqrt(v) + eps), p -= lr·b. ``weight_decay`` adds
    wd·p to the gradient; ``maximize`` ascends. State: ``step``, ``square_avg``,
    ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered) -- torch's names."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        self._check_nonnegative(group, "alpha", "eps", "momentum")

    def _step_group(self, group: dict[str, Any]) -> None:
        params, grads = self._grads(group)
        momentum = float(group["momentum"])
        centered = bool(group["centered"])
        opts = dict(lr=float(group["lr"]), alpha=float(group["alpha"]), eps=float(group["eps"]),
                    weight_decay=float(group["weight_decay"]), momentum=momentum,
                    maximize=bool(group["maximize"]))
        for p, g in zip(params, grads):
            st = self.state.get(p)
            if st is None:
                st = self.state[p] = {"step": 0, "square_avg": self._new_state(p)}
            # Created when first needed, so a scheduler (OneCycleLR) may switch momentum on.
            if momentum > 0 and "momentum_buffer" not in st:
                st["momentum_buffer"] = self._new_state(p)
            if centered and "grad_avg" not in st:
                st["grad_avg"] = self._new_state(p)
            st["step"] += 1
            with p.device.activate():  # the update runs on the parameter's GPU
                rmsprop_update(p.device.xp, p.writable_data(), g, st["square_avg"].data,
                               st["grad_avg"].data if centered else None,
                               st["momentum_buffer"].data if momentum > 0 else None, **opts)
