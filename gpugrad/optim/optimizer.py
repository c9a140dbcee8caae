"""``Optimizer``: the base class of every optimizer, with PyTorch's parameter groups, per-parameter
state, ``step()`` / ``zero_grad()`` and ``state_dict()`` / ``load_state_dict()``. Each family is a
module of its own: ``sgd``, ``adam`` (Adam, AdamW), ``rmsprop``, ``adagrad``.

A subclass implements ``_step_group``: it updates every parameter of a group in place on its
device, with Python-float hyper-parameters, so a step never copies anything to or from the host.
Parameters whose ``.grad`` is None are skipped, and their state does not advance (as in PyTorch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from ..autograd import enable_grad, traced_call
from ..tensor import Tensor

# Group keys that schedulers write next to the options (OneCycleLR's cycle bounds), so a param
# group copied from a scheduled optimizer is still accepted.
_SCHEDULER_KEYS = {"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"}


def _check_structure(name: str, state_dict: Mapping[str, Any]) -> None:
    """The shape of an ``Optimizer.state_dict()``, checked before any of it is used."""
    def bad(why: str) -> ValueError:
        return ValueError(f"{name}.load_state_dict: {why} (not an Optimizer.state_dict()?)")

    groups, state = state_dict["param_groups"], state_dict["state"]
    if not isinstance(groups, (list, tuple)):
        raise bad(f"'param_groups' is a {type(groups).__name__}, not a list of dicts")
    for k, group in enumerate(groups):
        if not isinstance(group, Mapping):
            raise bad(f"param group {k} is a {type(group).__name__}, not a dict")
        ids = group.get("params", ())
        if not (isinstance(ids, (list, tuple))
                and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
            raise bad(f"param group {k}'s 'params' is {ids!r}, not a list of ints")
        if not all(isinstance(o, str) for o in group):
            raise bad(f"param group {k} has a non-string option name")
    if not isinstance(state, Mapping):
        raise bad(f"'state' is a {type(state).__name__}, not a dict")
    for key, entry in state.items():
        if isinstance(key, bool) or not isinstance(key, (int, str)) or not str(key).isdigit():
            raise bad(f"'state' has the key {key!r}, not a parameter index")
        if not (isinstance(entry, Mapping) and all(isinstance(f, str) for f in entry)):
            raise bad(f"the state of parameter {key} is not a dict of named values")


class Optimizer:
    """Base class: holds ``param_groups`` (dicts with "params" and per-group options) and
    ``state`` (per parameter, keyed by the parameter tensor)."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        name = type(self).__name__
        if isinstance(params, Tensor):
            raise TypeError(f"{name}: params must be an iterable of Tensors or of dicts, got a "
                            "Tensor (wrap it in a list)")
        self.defaults = dict(defaults)
        self.state: dict[Tensor, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []
        groups = list(params)
        if not groups:
            raise ValueError(f"{name}: got an empty parameter list")
        if not isinstance(groups[0], Mapping):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: Mapping[str, Any]) -> None:
        """Add a group of parameters with its own options (missing ones come from the defaults)."""
        name = type(self).__name__
        if not isinstance(group, Mapping) or "params" not in group:
            raise TypeError(f"{name}: a param group must be a dict with a 'params' entry")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if p.__class__ is not Tensor:
                raise TypeError(f"{name}: parameter {i} is a {type(p).__name__}, not a Tensor")
            if p._ctx is not None:
                raise ValueError(f"{name}: parameter {i} (shape {p.shape}) is not a leaf tensor; "
                                 "optimize the leaves (e.g. model.parameters())")
            if p.dtype.kind != "f":
                raise TypeError(f"{name}: parameter {i} has dtype {p.dtype}; only floating-point "
                                "tensors can be optimized")
            if not p.data.flags.c_contiguous:
                raise ValueError(f"{name}: parameter {i} (shape {p.shape}) is not contiguous")
            if id(p) in seen:
                raise ValueError(f"{name}: parameter {i} (shape {p.shape}) appears in more than "
                                 "one param group or twice in one")
            seen.add(id(p))
        unknown = set(group) - set(self.defaults) - {"params"} - _SCHEDULER_KEYS
        if unknown:
            raise ValueError(f"{name}: unknown option(s) {sorted(unknown)} in a param group; "
                             f"valid options are {sorted(self.defaults)}")
        full = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        self._validate(full)
        full["params"] = params
        self.param_groups.append(full)

    def _validate(self, group: dict[str, Any]) -> None:
        """Check one group's options; subclasses extend it."""
        lr = group["lr"]
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr >= 0:
            raise ValueError(f"{type(self).__name__}: invalid learning rate {lr!r} (must be a "
                             "number >= 0)")
        self._check_nonnegative(group, "weight_decay")

    def _check_nonnegative(self, group: dict[str, Any], *names: str) -> None:
        for key in names:
            if key in group and not group[key] >= 0:  # "not >=" also rejects NaN
                raise ValueError(f"{type(self).__name__}: invalid {key} {group[key]!r} (must be "
                                 ">= 0)")

    def _new_state(self, p: Tensor, fill: float = 0.0) -> Tensor:
        """A state array shaped like ``p`` on its device (and GPU), filled with ``fill``."""
        with p.device.activate():
            return Tensor._wrap(p.device.xp.full_like(p.data, fill), p.device)

    # -- the public loop API -----------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's ``.grad`` (to None by default, which makes the next backward
        store its gradient instead of adding it to zeros)."""
        traced_call(self._zero_grad, set_to_none)  # one step of a gg.compile program

    def _zero_grad(self, set_to_none: bool) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    with p.device.activate():
                        p.grad.writable_data()[...] = 0

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update the parameters; ``closure`` (re-evaluating the loss) is called first if given."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        # One step of a gg.compile program: the replay reads param_groups (hyperparameters
        # included) afresh each call, like this eager call does.
        traced_call(self._step_groups)
        return loss

    def replay_fast_path(self, func: Any) -> Any:
        """A function ``gg.compile``'s CPU replays may call instead of ``func`` (a method of
        this optimizer just traced): the same updates for the traced parameters, guarding
        per call that they still apply. None: the replay calls ``func``."""
        return None

    def _step_groups(self) -> None:
        for group in self.param_groups:
            self._step_group(group)

    def _step_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    @staticmethod
    def _grads(group: dict[str, Any]) -> tuple[list[Tensor], list[Any]]:
        """The params of a group that have a gradient, and those gradients as arrays that the
        fused kernels can take (contiguous, the parameter's dtype)."""
        params, grads = [], []
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            g = g.data
            if g.dtype != p.data.dtype or not g.flags.c_contiguous or g.shape != p.data.shape:
                if g.shape != p.data.shape:
                    raise ValueError(f"optimizer: gradient of shape {g.shape} does not match "
                                     f"its parameter of shape {p.shape}")
                with p.device.activate():
                    g = p.device.xp.ascontiguousarray(g, dtype=p.data.dtype)
            params.append(p)
            grads.append(g)
        return params, grads

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {...}}, "param_groups": [{options..., "params": [index, ...]}]}``,
        parameters numbered in group order, as in PyTorch. State tensors are shared, not copied."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state:
                    state[index[id(p)]] = {k: (v.detach() if isinstance(v, Tensor) else v)
                                           for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore options and state saved by ``state_dict`` (possibly from another device: each
        state array is copied onto its parameter's device and cast to its dtype). Everything is
        checked before anything changes."""
        name = type(self).__name__
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and "
                             "'param_groups' (from Optimizer.state_dict())")
        _check_structure(name, state_dict)
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the checkpoint has {len(saved_groups)} "
                             f"param groups, this optimizer has {len(self.param_groups)}")
        by_index: dict[int, Tensor] = {}
        new_groups = []
        for k, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            ids = list(saved.get("params", ()))
            if len(ids) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: param group {k} has {len(ids)} "
                                 f"parameters in the checkpoint but {len(group['params'])} here")
            by_index.update({int(i): p for i, p in zip(ids, group["params"])})
            options = {o: _plain(v) for o, v in saved.items() if o != "params"}
            merged = {**group, **options}
            self._validate(merged)
            new_groups.append(merged)
        new_state: dict[Tensor, dict[str, Any]] = {}
        for key, entry in dict(state_dict["state"]).items():
            p = by_index.get(int(key))
            if p is None:
                raise ValueError(f"{name}.load_state_dict: state for parameter {key} but no such "
                                 "parameter in the param groups")
            new_state[p] = {f: self._load_state_value(name, key, f, v, p)
                            for f, v in dict(entry).items()}
        self.param_groups[:] = new_groups
        self.state = new_state

    @staticmethod
    def _load_state_value(name: str, key: Any, field: str, value: Any, p: Tensor) -> Any:
        arr = value.data if isinstance(value, Tensor) else value
        if not (isinstance(arr, np.ndarray) or hasattr(arr, "__cuda_array_interface__")):
            return _plain(value)
        if arr.ndim == 0 and (field == "step" or p.ndim != 0):  # a count, not a 0-d state
            return _plain(arr.item())
        if tuple(arr.shape) != p.shape:
            raise ValueError(f"{name}.load_state_dict: state {field!r} of parameter {key} has "
                             f"shape {tuple(arr.shape)}, the parameter has shape {p.shape}")
        # Always a fresh array: state is updated in place and must not alias the checkpoint.
        # C order whatever the source's (the CUDA kernels update only C-contiguous state).
        with p.device.activate():
            data = p.device.xp.array(p.device.put(arr), dtype=p.dtype, copy=True, order="C")
        return Tensor._wrap(data, p.device)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(group):
                if k != "params":
                    lines.append(f"    {k}: {group[k]}")
        return "\n".join(lines) + "\n)"


def _plain(v: Any) -> Any:
    """Loaded option values as Python objects (lists back to tuples for ``betas``)."""
    if isinstance(v, Tensor):
        v = v.item() if v.size == 1 else v.tolist()
    if isinstance(v, np.generic):
        v = v.item()
    return tuple(v) if isinstance(v, list) else v


# -- SGD --------------------------------------------------------------------------------------
