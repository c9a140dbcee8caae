"""``SGD``: torch.optim.SGD's defaults and update formulas. ``step()`` updates each group with one
call of the fused entry point (``backend.config.fused_ops(...).sgd_step``: one kernel launch on
CUDA, the array-module reference ``backend.optim_updates`` on the CPU or with
``GPUGRAD_FUSED=0``); ``maximize=True``, which the kernel lacks, runs the reference directly."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..backend.config import fused_ops
from ..backend.optim_updates import plain_sgd_update, sgd_update
from ..tensor import Tensor
from .optimizer import Optimizer
from .sgd_replay import plain_cpu_replay


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov momentum and
    (L2) weight decay -- ``torch.optim.SGD``'s formulas:

    g = -g (maximize);  d = g + wd·p;  b = d (first step) or momentum·b + (1 - dampening)·d;
    d = d + momentum·b (nesterov) or b;  p -= lr·d
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay,
                                      maximize=maximize))

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        if not group["momentum"] >= 0:
            raise ValueError(f"SGD: invalid momentum {group['momentum']!r} (must be >= 0)")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum > 0 and zero dampening "
                             f"(got momentum={group['momentum']}, dampening={group['dampening']})")

    def _step_group(self, group: dict[str, Any]) -> None:
        if not (group["momentum"] or group["weight_decay"] or group.get("maximize")) and \
                self._plain_cpu_step(group, float(group["lr"])):
            return
        momentum = float(group["momentum"])
        opts = dict(lr=float(group["lr"]), momentum=momentum, dampening=float(group["dampening"]),
                    nesterov=bool(group["nesterov"]), weight_decay=float(group["weight_decay"]))
        maximize = bool(group.get("maximize", False))
        params, grads = self._grads(group)
        if not params:
            return
        # One call per (device, first step?) bucket -- normally exactly one. Parameters stepping
        # for the first time get their buffer set to d (no dampening), the others the running
        # update; without momentum there are no buffers.
        state = self.state
        ps, bufs, keys = [], [], []
        for p in params:
            first = False
            if momentum:
                st = state.get(p)
                buf = st.get("momentum_buffer") if st is not None else None
                first = buf is None
                if first:
                    with p.device.activate():
                        buf = Tensor._wrap(p.device.xp.empty_like(p.data), p.device)
                    state.setdefault(p, {})["momentum_buffer"] = buf
                bufs.append(buf.data)
            ps.append(p.writable_data())  # never update an array a graph saved
            keys.append((p.device, first))
        key = keys[0]
        if all(k[0] is key[0] and k[1] is key[1] for k in keys):  # the usual case, every step
            self._launch(key[0], ps, grads, bufs, opts, key[1], maximize)
            return
        buckets: dict[tuple[Any, bool], tuple[list, list, list]] = {}
        for i, k in enumerate(keys):
            bps, bgs, bbufs = buckets.setdefault(k, ([], [], []))
            bps.append(ps[i])
            bgs.append(grads[i])
            if momentum:
                bbufs.append(bufs[i])
        for (device, first), (bps, bgs, bbufs) in buckets.items():
            self._launch(device, bps, bgs, bbufs, opts, first, maximize)

    def replay_fast_path(self, func: Any) -> Any:
        """For ``gg.compile``'s CPU replays: ``_step_groups`` specialised to the traced plain
        CPU step (``sgd_replay``), or None (the replay calls ``func``)."""
        return plain_cpu_replay(self) if func == self._step_groups else None

    @staticmethod
    def _plain_cpu_step(group: dict[str, Any], lr: float) -> bool:
        """``p -= lr·g`` when every parameter is on the CPU (where the fused step is the
        reference) with a gradient of its own dtype and shape: the reference's update in one
        pass over the group, without the gradient gathering, kernel checks and bucketing that
        on a small model cost as much as the arithmetic. False, with nothing done, otherwise
        (the general path then handles or reports it)."""
        ts, gs = [], []
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            g = g.data
            if p.device.type != "cpu" or g.dtype is not p.data.dtype or g.shape != p.data.shape:
                return False
            ts.append(p)
            gs.append(g)
        # never update an array a graph saved (writable_data counts references: take no other)
        plain_sgd_update([p.writable_data() for p in ts], gs, lr)
        return True

    @staticmethod
    def _launch(device, ps, gs, bufs, opts, first: bool, maximize: bool) -> None:
        with device.activate():  # the update runs on the bucket's GPU
            if maximize:  # an option the kernel lacks: the reference has every option
                sgd_update(ps, gs, bufs, first_step=first, maximize=True, **opts)
            else:
                fused_ops(device.backend).sgd_step(ps, gs, bufs, first_step=first, **opts)
