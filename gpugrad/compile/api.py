"""``gg.compile``: trace a step once per signature, replay the program on later calls."""

from __future__ import annotations

import functools
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import autograd
from ..autograd import _grad_mode, _tracing
from ..backend import fp_errors
from ..tensor import Tensor
from .graphed import GraphedReplay, graphs_enabled
from .program import STALE, Program
from .tracer import CompileError, Tracer

_ARG_SCALARS = (int, float, bool, str, type(None))
CACHE_SIZE = 8  # programs kept per compiled function (least recently used dropped first)


class _Entry:
    """One cached program and how to rebuild the function's result from its outputs."""

    def __init__(self, program: Program, rebuild: Callable[[tuple], Any], pins: list) -> None:
        self.program = program
        self.rebuild = rebuild
        self.pins = pins  # objects keyed by identity stay alive (their ids are not reused)
        self.graphed: GraphedReplay | None = None  # the CUDA replay, made by the first replay

    def run(self, tensors: list[Tensor]) -> Any:
        prog = self.program
        dev = prog.device
        # no floating-point warnings, as in eager ops (Function.apply and the backward walk
        # are quiet; here the updates recorded as calls are too)
        token = fp_errors.quiet()
        try:
            if dev is None or dev.type == "cpu":
                outs = prog.replay(*tensors)
            else:
                with dev.activate():
                    if self.graphed is None and graphs_enabled():
                        self.graphed = GraphedReplay(prog)
                    outs = (prog.replay(*tensors) if self.graphed is None
                            else self.graphed(tensors))
        finally:
            fp_errors.restore(token)
        return outs if outs is STALE else self.rebuild(outs)


class Compiled:
    """A function compiled by ``gg.compile``. Call it like the function; ``.program`` is the
    program of the latest call (``print`` it), ``.programs`` every cached one."""

    def __init__(self, fn: Callable[..., Any], fallback: str | None,
                 cache_size: int = CACHE_SIZE) -> None:
        if fallback not in (None, "eager"):
            raise ValueError(f"gg.compile: fallback must be None or 'eager', got {fallback!r}")
        if not callable(fn):
            raise TypeError(f"gg.compile: expected a function, got {type(fn).__name__}")
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.fallback = fallback
        self.cache_size = int(cache_size)
        self.traces = 0  # how many times the function was traced (a test and tuning aid)
        self.eager_reason: str | None = None
        self._cache: OrderedDict[tuple, _Entry] = OrderedDict()
        self._modules: list[Any] = []
        self._last: _Entry | None = None
        self._last_key: tuple | None = None
        self._label = getattr(fn, "__qualname__", getattr(fn, "__name__", "fn"))

    @property
    def program(self) -> Program | None:
        return None if self._last is None else self._last.program

    @property
    def programs(self) -> list[Program]:
        return [e.program for e in self._cache.values()]

    def __repr__(self) -> str:
        return f"<gg.compile {self._label}: {len(self._cache)} program(s), {self.traces} trace(s)>"

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        """As a method decorator: ``self`` becomes the first argument (keyed by identity)."""
        return self if obj is None else types.MethodType(self, obj)

    # -- calling ---------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.eager_reason is not None or _tracing.tracer is not None:
            return self.fn(*args, **kwargs)  # inside another trace: recorded by that one
        tensors: list[Tensor] = []
        key = self._signature(args, kwargs, tensors, [])
        entry = self._last
        if entry is None or key != self._last_key:  # usually the last signature again: no hashing
            entry = self._cache.get(key)
            if entry is None:
                return self._trace(args, kwargs, tensors)
            self._cache.move_to_end(key)
            self._last, self._last_key = entry, key
        result = entry.run(tensors)
        if result is STALE:  # a parameter changed dtype or shape since the trace: trace again
            self._cache.pop(key, None)
            self._last_key = None
            return self._trace(args, kwargs, tensors)
        return result

    def _signature(self, args: tuple, kwargs: dict, tensors: list[Tensor],
                   pins: list) -> tuple:
        # hooks registered after a trace must not be skipped by its replay: their presence is
        # part of the key (and a trace with them stops, see walk.record_backward)
        parts: list[Any] = [_grad_mode.enabled, tuple([m.training for m in self._modules]),
                            bool(autograd._grad_hooks or autograd._backward_done)]
        for v in args:  # the common case first: tensors and numbers, flat
            if v.__class__ is Tensor:
                d = v.data  # device ids: devices are interned (hashing one is Python code)
                # the layout too: a lowered step's buffer is C-ordered where eager's result
                # takes its operands' layout (which decides a later reduction's rounding)
                parts.append((d.shape, d.strides, d.dtype, id(v.device), v.requires_grad))
                tensors.append(v)
            elif v.__class__ in _ARG_SCALARS:
                parts.append((v.__class__, v))
            else:
                parts.append(self._nested(v, tensors, pins))
        if kwargs:
            parts.append(self._nested(kwargs, tensors, pins))
        if len(tensors) > 1:  # which arguments share an array is part of it too
            ids = [id(t.data) for t in tensors]
            if len(set(ids)) < len(ids):
                parts.append(tuple(ids.index(i) for i in ids))
        return tuple(parts)

    def _nested(self, v: Any, tensors: list[Tensor], pins: list) -> Any:
        if v.__class__ is Tensor:
            tensors.append(v)
            d = v.data
            return (d.shape, d.strides, d.dtype, id(v.device), v.requires_grad)
        if v.__class__ in _ARG_SCALARS:
            return (v.__class__, v)
        if isinstance(v, (tuple, list)):
            return (v.__class__, tuple(self._nested(x, tensors, pins) for x in v))
        if isinstance(v, dict):
            return (dict, tuple((k, self._nested(x, tensors, pins)) for k, x in sorted(v.items())))
        if isinstance(v, np.ndarray) or hasattr(v, "__cuda_array_interface__"):
            raise TypeError(f"gg.compile({self._label}): an array argument (shape "
                            f"{tuple(v.shape)}) would be copied into a constant; pass a tensor "
                            "(gg.tensor(a))")
        if isinstance(v, np.generic):
            return (v.__class__, v.item())
        pins.append(v)  # a model, a trainer, ...: the program is for this very object
        return ("object", id(v))

    def _trace(self, args: tuple, kwargs: dict, tensors: list[Tensor]) -> Any:
        tracer = Tracer(self._label, self.fallback == "eager")
        tracer.add_roots(self.fn)
        pins: list = []
        self._signature(args, kwargs, [], pins)
        tracer.note([vars(p) for p in pins if hasattr(p, "__dict__")])  # a method's self
        for i, t in enumerate(tensors):
            tracer.input_index.setdefault(id(t), i)
            slot = tracer.program.new_slot(t.data, "x")
            tracer.program.inputs.append(slot)
            tracer.file(t.data, slot)
            if tracer.program.device is None:
                tracer.program.device = t.device
            elif t.device is not tracer.program.device:
                raise CompileError(f"gg.compile({self._label}): the tensor arguments are on "
                                   f"{tracer.program.device} and {t.device}; a program runs "
                                   "on one device")
        if _tracing.tracer is not None:
            raise RuntimeError("gg.compile: another trace is running on this thread")
        _tracing.tracer = tracer
        try:
            result = self.fn(*args, **kwargs)
            if tracer.failure is None:
                rebuild, eager_result = _outputs(tracer, result)
        finally:
            _tracing.tracer = None
        self.traces += 1
        for m in tracer.modules:
            if all(m is not k for k in self._modules):
                self._modules.append(m)
        if tracer.failure is not None:
            self.eager_reason = tracer.failure
            warnings.warn(tracer.failure + f"; {self._label} runs eagerly from now on",
                          RuntimeWarning, stacklevel=3)
            return result
        tracer.program.finish()
        entry = _Entry(tracer.program, rebuild, [])
        pins: list = []
        key = self._signature(args, kwargs, [], pins)  # again: the modules seen are known now
        entry.pins = pins
        self._cache[key] = entry
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        self._last, self._last_key = entry, (key if key in self._cache else None)
        return eager_result


def _outputs(tracer: Tracer, result: Any) -> tuple[Callable[[tuple], Any], Any]:
    """How to rebuild ``result`` from the program's outputs, and the value this (tracing) call
    returns: the same structure, tensors new and detached, as every replay returns."""
    prog = tracer.program
    wrap = Tensor._wrap

    def plan(v: Any) -> tuple[Callable[[tuple], Any], Any]:
        if v.__class__ is Tensor:
            if id(v) not in tracer.born and id(v) not in tracer.input_index:
                return (lambda outs: v), v  # a tensor from before the call (e.g. a parameter)
            slot = tracer.tensor_slot(v, "returning a tensor")
            if slot < 0:
                return (lambda outs: None), v
            k = len(prog.outputs)
            prog.outputs.append(slot)
            prog.slots[slot].escapes = True
            dev = v.device
            return (lambda outs: wrap(outs[k], dev)), wrap(v.data, dev)
        if isinstance(v, (tuple, list)):
            parts = [plan(x) for x in v]
            fns = [f for f, _ in parts]  # the rebuild keeps no value of this call
            kind = type(v)
            return ((lambda outs: kind(f(outs) for f in fns)), kind(e for _, e in parts))
        if isinstance(v, dict):
            items = [(k, plan(x)) for k, x in v.items()]
            kfns = [(k, f) for k, (f, _) in items]
            return ((lambda outs: {k: f(outs) for k, f in kfns}),
                    {k: e for k, (_, e) in items})
        return (lambda outs: v), v  # numbers and other constants

    return plan(result)


def compile(fn: Callable[..., Any] | None = None, *,  # noqa: A001 - gg.compile, like torch
            fallback: str | None = None) -> Any:
    """Compile ``fn`` into static programs: ``@gg.compile`` or ``@gg.compile(fallback="eager")``.

    The first call for a signature (argument shapes, dtypes, devices, requires_grad, grad mode,
    the train/eval mode of each module called) runs ``fn`` eagerly while recording a program of
    array calls -- forward, backward walk, optimizer and buffer updates; later calls with that
    signature replay it. Returned tensors are new and detached on every call.
    """
    if fn is None:
        return lambda f: Compiled(f, fallback)
    return Compiled(fn, fallback)
