"""Optimizers with PyTorch's parameter groups, defaults and update formulas: ``SGD``, ``Adam``,
``AdamW`` (``RMSprop`` and ``Adagrad`` live in their own modules).

``step()`` updates every parameter of a group in place on its device with one call of the fused
entry point (``device.backend.fused.sgd_step`` / ``adam_step``: one kernel launch on CUDA) --
hyper-parameters travel as Python floats, so a step never copies anything to or from the host.
With ``GPUGRAD_FUSED=0`` the same formulas run as ordinary in-place array math. The options the
kernels do not implement (``maximize=True``, Adam's ``amsgrad=True``) always take that composite
path, for the groups that set them. Parameters whose ``.grad`` is None are skipped, and their
state does not advance (as in PyTorch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from ..autograd import enable_grad
from ..backend import fused_enabled
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


def _fused(device):
    return device.backend.fused if fused_enabled() else None


def lerp_(a: Any, b: Any, w: float) -> None:
    """a = lerp(a, b, w) in place with torch.lerp's two branches (exact at w = 1, where the
    one-line form a + w·(b - a) is not; torch may fuse the multiply-add, so the rest agrees to
    rounding)."""
    if w < 0.5:
        a += w * (b - a)
    else:
        a[...] = b - (b - a) * (1 - w)


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
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    with p.device.activate():
                        p.grad._private_array()[...] = 0

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update the parameters; ``closure`` (re-evaluating the loss) is called first if given."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

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
        if hasattr(arr, "__cuda_array_interface__") and p.device.type == "cpu":
            arr = arr.get()
        # Always a fresh array: state is updated in place and must not alias the checkpoint.
        with p.device.activate():
            data = p.device.xp.array(p.device.backend.asarray(arr), dtype=p.dtype, copy=True)
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
def sgd_composite(params: list, grads: list, momentum_bufs: list, *, lr: float, momentum: float,
                  dampening: float, nesterov: bool, weight_decay: float,
                  first_step: bool, maximize: bool = False) -> None:
    """torch.optim.SGD's update in ordinary in-place array math (the GPUGRAD_FUSED=0 path, and
    the path of ``maximize=True``)."""
    for i, (p, g) in enumerate(zip(params, grads)):
        g = -g if maximize else g
        d = g + weight_decay * p if weight_decay else g
        if momentum:
            b = momentum_bufs[i]
            if first_step:
                b[...] = d
            else:
                b *= momentum
                b += (1 - dampening) * d
            d = d + momentum * b if nesterov else b
        p -= lr * d


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
        params, grads = self._grads(group)
        if not params:
            return
        momentum = float(group["momentum"])
        opts = dict(lr=float(group["lr"]), momentum=momentum, dampening=float(group["dampening"]),
                    nesterov=bool(group["nesterov"]), weight_decay=float(group["weight_decay"]))
        maximize = bool(group.get("maximize", False))
        # One call per (device, first step?) bucket -- normally exactly one. Parameters stepping
        # for the first time get their buffer set to d (no dampening), the others the running
        # update; without momentum there are no buffers.
        buckets: dict[tuple[Any, bool], tuple[list, list, list]] = {}
        for p, g in zip(params, grads):
            buf = None
            if momentum:
                st = self.state.get(p)
                buf = st.get("momentum_buffer") if st is not None else None
                first = buf is None
                if first:
                    with p.device.activate():
                        buf = Tensor._wrap(p.device.xp.empty_like(p.data), p.device)
                    self.state.setdefault(p, {})["momentum_buffer"] = buf
            else:
                first = False
            ps, gs, bufs = buckets.setdefault((p.device, first), ([], [], []))
            ps.append(p._private_array())  # never update an array a graph saved
            gs.append(g)
            if buf is not None:
                bufs.append(buf.data)
        for (device, first), (ps, gs, bufs) in buckets.items():
            self._launch(device, ps, gs, bufs, opts, first, maximize)

    @staticmethod
    def _launch(device, ps, gs, bufs, opts, first: bool, maximize: bool) -> None:
        fused = _fused(device)
        with device.activate():  # the update runs on the bucket's GPU
            if fused is not None and not maximize:  # the kernel has no maximize
                fused.sgd_step(ps, gs, bufs, first_step=first, **opts)
            else:
                sgd_composite(ps, gs, bufs, first_step=first, maximize=maximize, **opts)


# -- Adam / AdamW -----------------------------------------------------------------------------
def adam_composite(xp: Any, params: list, grads: list, exp_avgs: list, exp_avg_sqs: list,
                   max_exp_avg_sqs: list | None, *, step: int, lr: float, beta1: float,
                   beta2: float, eps: float, weight_decay: float, decoupled: bool,
                   maximize: bool = False) -> None:
    """torch.optim.Adam / AdamW's update in in-place array math (the GPUGRAD_FUSED=0 path, and
    the path of ``amsgrad`` / ``maximize``). ``max_exp_avg_sqs`` is None unless amsgrad."""
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = math.sqrt(1 - beta2**step)
    step_size = lr / bias_correction1
    for i, (p, g, m, v) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
        g = -g if maximize else g
        if weight_decay and decoupled:
            p *= 1 - lr * weight_decay
        d = g + weight_decay * p if weight_decay and not decoupled else g
        lerp_(m, d, 1 - beta1)
        v *= beta2
        v += (1 - beta2) * d * d
        if max_exp_avg_sqs is not None:  # amsgrad: normalise by the largest v seen so far
            v = xp.maximum(max_exp_avg_sqs[i], v, out=max_exp_avg_sqs[i])
        denom = xp.sqrt(v)
        denom /= bias_correction2_sqrt
        denom += eps
        p -= step_size * (m / denom)


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
            b[0].append(p._private_array())  # never update an array a graph saved
            b[1].append(g)
            b[2].append(st["exp_avg"].data)
            b[3].append(st["exp_avg_sq"].data)
            if amsgrad:
                b[4].append(st["max_exp_avg_sq"].data)
        for (device, step), (ps, gs, ms, vs, vmaxs) in buckets.items():
            fused = _fused(device)
            with device.activate():  # the update runs on the bucket's GPU
                if fused is not None and not (amsgrad or maximize):  # options the kernel lacks
                    fused.adam_step(ps, gs, ms, vs, step=step, **opts)
                else:
                    adam_composite(device.xp, ps, gs, ms, vs, vmaxs if amsgrad else None,
                                   step=step, maximize=maximize, **opts)


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
