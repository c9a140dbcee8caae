"""``Adagrad``: torch.optim.Adagrad's defaults and update formulas, in in-place array math on each
parameter's device (Python-float hyper-parameters: no host round trip)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .optimizer import Optimizer


def adagrad_update(xp: Any, p: Any, g: Any, state_sum: Any, *, clr: float, eps: float,
                   weight_decay: float, maximize: bool) -> None:
    """One parameter's Adagrad step in place (``clr``: this step's decayed learning rate)."""
    g = -g if maximize else g
    if weight_decay:
        g = g + weight_decay * p
    state_sum += g * g
    std = xp.sqrt(state_sum)
    std += eps
    p -= clr * (g / std)


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.), PyTorch's variant: s += g²; p -= clr·g / (sqrt(s) + eps) with
    clr = lr / (1 + (step - 1)·lr_decay). ``weight_decay`` adds wd·p to the gradient;
    ``maximize`` ascends. State (``step``, ``sum`` = initial_accumulator_value) is created for
    every parameter up front, as in PyTorch."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps,
                                      weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      maximize=maximize))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        self._check_nonnegative(group, "lr_decay", "eps", "initial_accumulator_value")

    def add_param_group(self, group: Mapping[str, Any]) -> None:
        super().add_param_group(group)
        full = self.param_groups[-1]
        for p in full["params"]:
            self.state[p] = self._init_state(p, full)

    def _init_state(self, p: Any, group: dict[str, Any]) -> dict[str, Any]:
        return {"step": 0, "sum": self._new_state(p, float(group["initial_accumulator_value"]))}

    def _step_group(self, group: dict[str, Any]) -> None:
        params, grads = self._grads(group)
        lr, lr_decay = float(group["lr"]), float(group["lr_decay"])
        opts = dict(eps=float(group["eps"]), weight_decay=float(group["weight_decay"]),
                    maximize=bool(group["maximize"]))
        for p, g in zip(params, grads):
            st = self.state.get(p)
            if st is None:  # a loaded state_dict without this parameter's entry
                st = self.state[p] = self._init_state(p, group)
            st["step"] += 1
            clr = lr / (1 + (st["step"] - 1) * lr_decay)
            with p.device.activate():  # the update runs on the parameter's GPU
                adagrad_update(p.device.xp, p.writable_data(), g, st["sum"].data, clr=clr, **opts)
