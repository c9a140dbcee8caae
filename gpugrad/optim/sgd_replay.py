"""The plain CPU SGD step as ``gg.compile`` replays it: ``SGD._step_groups`` specialised to the
parameters it saw when traced.

A replayed step still reads every group's ``lr`` and options per call, and every parameter's
``.grad``, as eager ``step()`` does, and makes the same update with the same calls
(``p -= g * lr``, through ``writable_data``); what it skips is re-deriving, per call, what the
trace established -- which parameters a group holds, their dtypes, that they live on the CPU --
through the general step's layers of calls, which on a small model cost a good part of the
arithmetic. Whatever no longer matches the trace -- a group gaining momentum, weight decay or
maximize, its parameter list edited or replaced, a gradient of another dtype or shape, a
parameter cast or moved -- sends that group to the general ``_step_group``, which handles it
(or reports it) as eager code does.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import is_
from typing import Any

import numpy as np

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_F32_F64 = (_F32, _F64)


def _plain(group: dict[str, Any]) -> bool:
    """No option that ``SGD._step_group``'s plain path leaves to the general one."""
    return not (group["momentum"] or group["weight_decay"] or group.get("maximize"))


def plain_cpu_replay(opt: Any) -> Callable[[], None] | None:
    """A function doing ``opt._step_groups()`` for the traced parameters, or None when a group is
    not the plain case (momentum, weight decay, maximize) or holds a parameter that is not a
    float32/float64 CPU array: those steps replay as the general call."""
    plans = []
    for group in opt.param_groups:
        params = list(group["params"])
        if not _plain(group) or not all(p.device.type == "cpu" and p.data.__class__ is np.ndarray
                                        and p.data.dtype in _F32_F64 for p in params):
            return None
        entries = tuple((p, p.data.dtype, p.data.dtype is _F32) for p in params)
        plans.append((group, group["params"], params, entries))
    step_group = opt._step_group
    ndarray, f32, f64 = np.ndarray, np.float32, np.float64

    def checked(group: dict[str, Any], plan: tuple) -> list | None:
        """(param, grad array, float32?) for each parameter with a gradient, if the group is
        still the traced plain one and every gradient matches its parameter; else None."""
        traced, plist, params, entries = plan
        if group is not traced or group["params"] is not plist or not _plain(group) \
                or len(plist) != len(params) or not all(map(is_, plist, params)):
            return None
        todo = []
        for p, dt, is32 in entries:
            g = p.grad
            if g is None:
                continue  # skipped, as eager skips it
            d, pd = g.data, p.data
            if d.__class__ is not ndarray or d.dtype is not dt or pd.__class__ is not ndarray \
                    or pd.dtype is not dt or d.shape != pd.shape:
                return None  # nothing updated yet: the general path takes the whole group
            todo.append((p, d, is32))
        return todo

    def step_groups() -> None:
        current = opt.param_groups
        same = len(current) == len(plans)
        for k, group in enumerate(current):
            todo = checked(group, plans[k]) if same else None
            if todo is None:
                step_group(group)
                continue
            lr = float(group["lr"])
            lr32, lr64 = f32(lr), f64(lr)  # as optim_updates.plain_sgd_update
            for p, d, is32 in todo:
                pd = p.writable_data()  # never update an array a graph saved
                pd -= d * (lr32 if is32 else lr64)

    return step_groups
