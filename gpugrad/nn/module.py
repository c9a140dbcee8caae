"""``Module``: a container of parameters, buffers and sub-modules, like ``torch.nn.Module``.

Parameters are plain leaf ``Tensor`` objects with ``requires_grad=True`` -- there is no Tensor
subclass, because the autograd hot path tests ``t.__class__ is Tensor``. Assigning such a tensor
to a module attribute registers it as a parameter; ``nn.Parameter(x)`` makes one. Attributes stay
ordinary instance attributes (fast to read in ``forward``); the registries only keep names in
order, for ``named_parameters`` and ``state_dict``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from ..autograd import _tracing, traced_call
from ..backend import device as _device
from ..tensor import Tensor, as_dtype


def Parameter(data: Any, requires_grad: bool = True) -> Tensor:  # noqa: N802 - torch spelling
    """A leaf tensor for a module to register as a parameter.

    A Tensor argument shares its data (like ``torch.nn.Parameter``); anything else is copied into a
    new tensor (float data becomes float32). Module attributes holding leaf tensors that require
    grad are parameters whether or not they were made here; use ``Module.register_parameter`` for a
    frozen (``requires_grad=False``) one.
    """
    if isinstance(data, Tensor):
        t = Tensor._wrap(data.data, data.device)
    else:
        t = Tensor(data)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _is_param(value: Any) -> bool:
    return value.__class__ is Tensor and value.requires_grad and value._ctx is None


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of every layer and model; subclasses define ``forward``."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration ----------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() call in "
                f"{type(self).__name__}.__init__ (call super().__init__() first)"
            )
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if _is_param(value):
            buffers.pop(name, None)
            modules.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            buffers.pop(name, None)
            modules[name] = value
        elif name in buffers and (value is None or isinstance(value, Tensor)):
            buffers[name] = value
        elif name in params and value.__class__ is Tensor:
            params[name] = value  # a frozen tensor replacing a parameter stays a parameter
        else:
            params.pop(name, None)
            buffers.pop(name, None)
            modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Tensor | None) -> None:
        """Register ``param`` under ``name`` even if it does not require grad (a frozen weight)."""
        if param is not None and (param.__class__ is not Tensor or param._ctx is not None):
            raise TypeError(f"register_parameter: {name!r} must be a leaf Tensor or None, got "
                            f"{type(param).__name__}{' (not a leaf)' if param is not None else ''}")
        self.__setattr__(name, param)
        if param is not None:
            self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None) -> None:
        """A tensor that is state but not a parameter (saved in ``state_dict``, never trained)."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: {name!r} must be a Tensor or None, got "
                            f"{type(tensor).__name__}")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = tensor
        object.__setattr__(self, name, tensor)

    def add_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module, got {type(module).__name__}")
        self._modules[name] = module
        object.__setattr__(self, name, module)

    # -- calling ---------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _tracing.tracer is not None:  # gg.compile keys its programs on train()/eval()
            _tracing.tracer.on_module(self)
        return self.forward(*args, **kwargs)

    # -- traversal -------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every descendant, depth first, each once."""
        seen: set[int] = set()
        stack: list[tuple[str, Module]] = [(prefix, self)]
        while stack:
            name, mod = stack.pop()
            if id(mod) in seen:
                continue
            seen.add(id(mod))
            yield name, mod
            children = [(f"{name}.{k}" if name else k, m) for k, m in mod._modules.items()
                        if m is not None]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def _named(self, registry: str, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        seen: set[int] = set()
        for mod_name, mod in self.named_modules(prefix):
            for name, t in getattr(mod, registry).items():
                if t is None or id(t) in seen:
                    continue
                seen.add(id(t))  # a shared (tied) tensor is listed once, like torch
                yield (f"{mod_name}.{name}" if mod_name else name), t

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        return self._named("_parameters", prefix)

    def parameters(self) -> Iterator[Tensor]:
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        return self._named("_buffers", prefix)

    def buffers(self) -> Iterator[Tensor]:
        for _, b in self.named_buffers():
            yield b

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn`` on every sub-module (children first) and then on this module."""
        for m in list(self.modules())[::-1]:
            fn(m)
        return self

    # -- modes and gradients ---------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's ``.grad`` (to None by default: the next backward then stores
        its gradient without adding to a zero array)."""
        traced_call(self._zero_grad, set_to_none)  # one step of a gg.compile program

    def _zero_grad(self, set_to_none: bool) -> None:
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                with p.device.activate():
                    p.grad.writable_data()[...] = 0

    # -- devices ---------------------------------------------------------------------------
    def to(self, device: Any = None, dtype: Any = None) -> Module:
        """Move (and/or cast) every parameter and buffer *in place*; returns ``self``.

        The parameter objects stay the same, so an optimizer built before the move keeps working
        (its state moves with ``Optimizer.load_state_dict`` or is created on the next step).
        """
        dev = _device(device) if device is not None else None
        dt = as_dtype(dtype, "Module.to") if dtype is not None else None
        if dt is not None and dt.kind != "f":
            raise TypeError(f"Module.to: dtype must be floating point, got {dt}")
        for _, t in list(self.named_parameters()) + list(self.named_buffers()):
            _move_in_place(t, dev, dt)
            if t.grad is not None:
                _move_in_place(t.grad, dev, dt)
        return self

    def cpu(self) -> Module:
        return self.to("cpu")

    def float(self) -> Module: return self.to(dtype=np.float32)
    def double(self) -> Module: return self.to(dtype=np.float64)
    def half(self) -> Module: return self.to(dtype=np.float16)

    def cuda(self, i: int = 0) -> Module:
        return self.to(f"cuda:{i}")

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, Tensor]:
        """Name -> tensor for every parameter and buffer (detached; they share the data)."""
        out: OrderedDict[str, Tensor] = OrderedDict()
        for name, t in self.named_parameters():
            out[name] = t.detach()
        for name, t in self.named_buffers():
            out[name] = t.detach()
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any],
                        strict: bool = True) -> IncompatibleKeys:
        """Copy values into the existing parameters and buffers (in place, through the host when
        the devices differ, cast to each parameter's dtype).

        Shape mismatches always raise ValueError; with ``strict`` so do missing or unexpected keys.
        Nothing is modified unless every check passes.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict: expected a mapping of name -> tensor, got "
                            f"{type(state_dict).__name__}")
        own = OrderedDict(list(self.named_parameters()) + list(self.named_buffers()))
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        problems = []
        if strict and (missing or unexpected):
            if missing:
                problems.append(f"missing keys {missing}")
            if unexpected:
                problems.append(f"unexpected keys {unexpected}")
        arrays = {}
        for name, target in own.items():
            if name not in state_dict:
                continue
            value = _host_or_device_array(state_dict[name])
            if value is None:
                problems.append(f"{name!r}: expected a tensor or array, got "
                                f"{type(state_dict[name]).__name__}")
            elif tuple(value.shape) != target.shape:
                problems.append(f"{name!r}: checkpoint shape {tuple(value.shape)} vs model shape "
                                f"{target.shape}")
            elif value.dtype.kind not in "fiub":
                problems.append(f"{name!r}: unsupported dtype {value.dtype}")
            else:
                arrays[name] = value
        if problems:
            raise ValueError(f"load_state_dict for {type(self).__name__}: " + "; ".join(problems))
        for name, value in arrays.items():
            target = own[name]
            with target.device.activate():  # the cast and the copy run on the target's GPU
                target.writable_data()[...] = _to_array(value, target)  # not a saved array
        return IncompatibleKeys(missing, unexpected)

    # -- display ---------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, m in self._modules.items():
            body = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        head = f"{type(self).__name__}(" + (extra + "\n" if extra else "\n")
        return head + "\n".join(lines) + "\n)"


def _move_in_place(t: Tensor, dev, dtype) -> None:
    data = t.data
    if dev is not None and dev is not t.device:
        data = dev.put(data)
        t.device = dev
    if dtype is not None and data.dtype.kind == "f" and data.dtype != dtype:
        with t.device.activate():
            data = data.astype(dtype)
    t.data = data


def _host_or_device_array(value: Any):
    """The array behind a Tensor, NumPy or CuPy array; None for anything else."""
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, np.ndarray) or hasattr(value, "__cuda_array_interface__"):
        return value
    return None


def _to_array(value: Any, target: Tensor):
    """``value`` as an array on ``target``'s device with its dtype (a copy is fine: it is assigned
    into the target's existing buffer)."""
    return target.device.put(value).astype(target.dtype, copy=False)
