"""``Adam`` and ``AdamW``: torch.optim's defaults and update formulas. ``step()`` updates each
group with one call of the fused entry point (``backend.config.fused_ops(...).adam_step``: one
kernel launch on CUDA, the array-module reference ``backend.optim_updates`` on the CPU or with
``GPUGRAD_FUSED=0``); ``amsgrad`` and ``maximize``, which the kernel lacks, run the reference
directly for the groups that set them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..backend.config import fused_ops
from ..backend.optim_updates import adam_update
from .optimizer import Optimizer


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's defaults and formulas; ``weight_decay`` adds wd·p to the
    gradient (L2). For decoupled weight decay use ``AdamW``. ``amsgrad=True`` divides by the
    running maximum of v (state ``max_exp_avg_sq``); ``maximize=True`` ascends (g = -g)."""

    _decoupled = False

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        name = type(self).__name__
        betas = tuple(group["betas"])
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"{name}: invalid betas {group['betas']!r} (two numbers in [0, 1))")
        group["betas"] = betas
        self._check_nonnegative(group, "eps")

    def _step_group(self, group: dict[str, Any]) -> None:
        params, grads = self._grads(group)
        if not params:
            return
        beta1, beta2 = group["betas"]
        opts = dict(lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2),
                    eps=float(group["eps"]), weight_decay=float(group["weight_decay"]),
                    decoupled=self._decoupled)
        amsgrad = bool(group.get("amsgrad", False))
        maximize = bool(group.get("maximize", False))
        # The bias corrections depend on each parameter's own step count; parameters skipped on
        # some steps can lag, so bucket by (device, step): normally one call for the whole group.
        buckets: dict[tuple[Any, int], tuple[list, list, list, list, list]] = {}
        for p, g in zip(params, grads):
            st = self.state.get(p)
            if st is None:  # state lives on the parameter's device
                st = self.state[p] = {"step": 0, "exp_avg": self._new_state(p),
                                      "exp_avg_sq": self._new_state(p)}
            if amsgrad and "max_exp_avg_sq" not in st:  # also when amsgrad is switched on later
                st["max_exp_avg_sq"] = self._new_state(p)
            st["step"] += 1
            b = buckets.setdefault((p.device, st["step"]), ([], [], [], [], []))
            b[0].append(p.writable_data())  # never update an array a graph saved
            b[1].append(g)
            b[2].append(st["exp_avg"].data)
            b[3].append(st["exp_avg_sq"].data)
            if amsgrad:
                b[4].append(st["max_exp_avg_sq"].data)
        for (device, step), (ps, gs, ms, vs, vmaxs) in buckets.items():
            with device.activate():  # the update runs on the bucket's GPU
                if amsgrad or maximize:  # options the kernel lacks: the reference has them all
                    adam_update(ps, gs, ms, vs, vmaxs if amsgrad else None, step=step,
                                maximize=maximize, **opts)
                else:
                    fused_ops(device.backend).adam_step(ps, gs, ms, vs, step=step, **opts)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr·wd before the Adam
    update. PyTorch's defaults, including ``weight_decay=1e-2``."""

    _decoupled = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)
