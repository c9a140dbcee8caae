"""Layers: ``Linear``, ``Flatten``, ``Dropout``, the containers (``Sequential``, ``ModuleList``)
and ``MLP``. Activations are in ``nn.activation``, losses in ``nn.loss``, normalization in
``nn.normalization``, ``Embedding`` in ``nn.embedding``."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .. import ops
from ..backend import device as _device
from ..creation import empty
from ..ops.stochastic import dropout as _dropout
from ..tensor import Tensor
from . import init
from .activation import ACTIVATIONS
from .module import Module, Parameter


class Linear(Module):
    """``y = x @ weight.T + bias`` with weight (out_features, in_features), recorded as one node.

    Initialized like ``torch.nn.Linear``: weight by ``kaiming_uniform_(a=sqrt(5))`` and bias from
    U(-1/sqrt(in_features), 1/sqrt(in_features)) -- both U(-k, k) with k = 1/sqrt(in_features),
    drawn weight first from the seeded host generator.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        for name, n in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
                raise ValueError(f"Linear: {name} must be a non-negative int, got {n!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        dev = _device(device)
        dt = np.dtype(np.float32 if dtype is None else dtype)
        if dt.kind != "f":
            raise TypeError(f"Linear: dtype must be floating point, got {dt}")
        self.weight = Parameter(empty(out_features, in_features, dtype=dt, device=dev))
        self.bias = Parameter(empty(out_features, dtype=dt, device=dev)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.in_features == 0:  # nothing to draw from; torch leaves the values as they are
            init.zeros_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)
            return
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return ops.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


















class Flatten(Module):
    """Flatten every dim after the first: (N, d1, d2, ...) -> (N, d1·d2·...)."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.reshape(x, (x.shape[0], -1)) if x.ndim != 2 else x


class Dropout(Module):
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)`` in ``train()``
    mode; the identity in ``eval()`` mode. Masks follow ``gg.manual_seed`` and are identical on
    every device (see ``gg.functional.dropout``)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = _check_p("Dropout", p)

    def forward(self, x: Tensor) -> Tensor:
        return _dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _check_p(owner: str, p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"{owner}: p must be a float in [0, 1], got {p!r}")
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{owner}: p must be in [0, 1], got {p}")
    return float(p)




# -- containers -------------------------------------------------------------------------------
class Sequential(Module):
    """Modules applied in order; ``Sequential(a, b)`` or ``Sequential(OrderedDict(name=module))``.

    Children are named "0", "1", ... (so a state_dict has keys like "0.weight", as in torch).
    """

    def __init__(self, *modules: Module | OrderedDict[str, Module]) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, _check_module("Sequential", name, m))
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), _check_module("Sequential", str(i), m))

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self._modules)), _check_module("Sequential", "appended", module))
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, idx: int | slice) -> Any:
        values = list(self._modules.values())
        if isinstance(idx, slice):
            return Sequential(*values[idx])
        return values[idx]

    def forward(self, x: Any) -> Any:
        for layer in self._modules.values():
            if layer is not None:
                x = layer(x)
        return x


class ModuleList(Module):
    """A list of modules whose parameters are registered (a plain list would hide them)."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> ModuleList:
        self.add_module(str(len(self._modules)), _check_module("ModuleList", "appended", module))
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        for m in modules:
            self.append(m)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, idx: int) -> Module:
        return list(self._modules.values())[idx]


def _check_module(owner: str, name: str, m: Any) -> Module:
    if not isinstance(m, Module):
        raise TypeError(f"{owner}: {name} must be a Module, got {type(m).__name__}")
    return m


class MLP(Sequential):
    """Linear layers of the given ``sizes`` with an activation between them (none after the last).

    ``MLP([784, 512, 512, 10])`` is Linear(784, 512), ReLU, Linear(512, 512), ReLU, Linear(512, 10);
    ``activation`` is a name ("relu", "tanh", "sigmoid", "gelu", "leaky_relu", "identity", "silu",
    "elu", "softplus") or a callable returning a Module.

    ``dropout=p > 0`` applies dropout after each hidden activation in ``train()`` mode. It is not a
    child module: the layers keep their indices, so the state_dict keys ("0.weight", "2.weight",
    ...) and ``model[i]`` are the same with or without dropout, and a checkpoint trained with
    dropout loads into a plain ``MLP(sizes)`` for inference (and vice versa).
    """

    def __init__(self, sizes: Sequence[int], activation: str | Callable[[], Module] = "relu",
                 bias: bool = True, device: Any = None, dtype: Any = None,
                 dropout: float = 0.0) -> None:
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"MLP: sizes needs at least an input and an output size, got {sizes}")
        if min(sizes) < 1:
            raise ValueError(f"MLP: every size must be >= 1, got {sizes}")
        if isinstance(activation, str):
            if activation not in ACTIVATIONS:
                raise ValueError(f"MLP: unknown activation {activation!r}; choose from "
                                 f"{sorted(ACTIVATIONS)} or pass a Module factory")
            make = ACTIVATIONS[activation]
        elif callable(activation):
            make = activation
        else:
            raise TypeError(f"MLP: activation must be a name or a callable, got "
                            f"{type(activation).__name__}")
        p = _check_p("MLP", dropout)  # before any layer draws its weights from the seeded generator
        layers: list[Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(Linear(n_in, n_out, bias=bias, device=device, dtype=dtype))
            if i < len(sizes) - 2:
                layers.append(make())
        super().__init__(*layers)
        self.sizes = tuple(sizes)
        self.dropout = p

    def forward(self, x: Any) -> Any:
        if not (self.dropout and self.training):
            return super().forward(x)
        for i, layer in enumerate(self._modules.values()):
            if layer is not None:
                x = layer(x)
            if i % 2 == 1:  # layers alternate Linear, activation, ..., Linear
                x = _dropout(x, self.dropout)
        return x

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}" if self.dropout else ""














