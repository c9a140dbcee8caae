"""The tracer: while a compiled function runs eagerly for the first time, the autograd hooks
(``gpugrad.autograd._tracing``) report every Function applied, every backward walk, and every
update made outside Functions (``traced_call``: optimizer steps, running statistics, clipping);
the tracer writes each as a step of a ``Program``.

Values are followed by the identity of their arrays: an array some step produced is a slot; an
array of a tensor that existed before the call (a parameter, a buffer, an argument) is read from
that tensor when the replay reaches the step that used it, so updates made between calls (an
optimizer step, ``load_state_dict``) are seen. Anything the replay could not reproduce -- a value
read on the host, an array computed outside the recorded ops -- stops the trace with a
``CompileError`` (or, with ``fallback="eager"``, lets this call finish eagerly and marks the
function as not compilable).
"""

from __future__ import annotations

import contextlib
import math
import sys
from typing import Any

import numpy as np

from ..autograd import _tracing
from ..tensor import Tensor
from .lower import lower_forward, lowering_enabled
from .program import CompileError, Program

_LITERALS = (int, float, bool)
__all__ = ["CompileError", "Tracer"]


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 -- an empty cell raises
    except ValueError:
        return False
    return True


def _fix_scalar(out: Any) -> Any:
    """As ``Function.apply``: NumPy returns scalars from 0-d ufuncs; slots hold arrays."""
    if out.__class__ is not np.ndarray and isinstance(out, np.generic):
        return np.asarray(out)
    return out


class Tracer:
    def __init__(self, name: str, fallback: bool) -> None:
        self.name = name
        self.fallback = fallback
        self.program = Program(name)
        self.failure: str | None = None
        self.modules: list[Any] = []
        self._module_ids: set[int] = set()
        self._module_arrays: dict[int, Tensor] | None = None
        self.id2slot: dict[int, int] = {}
        self._slot_key: dict[int, int] = {}  # slot -> the array id it is filed under
        self._volatile: set[int] = set()  # slots an untraced update may replace (reads, .grads)
        self._keep: list[Any] = []  # everything whose id is filed stays alive while tracing
        self.born: dict[int, str] = {}  # id(tensor made during the trace) -> what made it
        self.grad_owner: dict[int, Tensor] = {}  # id(a .grad made by a walk) -> its leaf
        self.forwards: dict[Any, tuple[list[tuple[str, list[int]]], int]] = {}
        self.input_index: dict[int, int] = {}  # id(argument tensor) -> position
        self.roots: list[Tensor] = []  # tensors the function refers to (closure, globals)
        self._constants: set[int] = set()  # ids of arrays built from host data (host_constant)

    # -- state -----------------------------------------------------------------------------------
    @property
    def device(self):
        return self.program.device

    def _check_device(self, t: Tensor, what: str) -> None:
        if self.program.device is None:
            self.program.device = t.device
        elif t.device is not self.program.device:
            self.fail(what, f"it uses tensors on {self.program.device} and {t.device}; a "
                      "program runs on one device")

    @contextlib.contextmanager
    def suspended(self):
        """Run eager code unrecorded (the tracer's own replays of library calls)."""
        _tracing.tracer = None
        try:
            yield
        finally:
            _tracing.tracer = None if self.failure is not None else self

    def fail(self, what: str, why: str) -> None:
        msg = (f"gg.compile({self.name}): {what} cannot be captured in a static program: {why}. "
               "Move it out of the compiled function, or use gg.compile(fn, fallback='eager') "
               "to run such a function eagerly")
        if not self.fallback:
            raise CompileError(msg)
        if self.failure is None:
            self.failure = msg
        _tracing.tracer = None  # the rest of this call runs eagerly, unrecorded

    # -- naming values ---------------------------------------------------------------------------
    def file(self, value: Any, slot: int) -> None:
        old = self._slot_key.get(slot)
        if old is not None and self.id2slot.get(old) == slot:
            del self.id2slot[old]
        self.id2slot[id(value)] = slot
        self._slot_key[slot] = id(value)
        self._keep.append(value)

    def produce(self, value: Any) -> int:
        slot = self.program.new_slot(value)
        if hasattr(value, "shape"):
            self.file(value, slot)
        return slot

    def forget_volatile(self) -> None:
        """After an untraced update: reads of captured arrays and .grads may be stale."""
        for s in self._volatile:
            key = self._slot_key.get(s)
            if key is not None and self.id2slot.get(key) == s:
                del self.id2slot[key]
        self._volatile.clear()

    def obj(self, t: Tensor) -> str:
        """The replay's expression for a tensor object that outlives the call."""
        i = self.input_index.get(id(t))
        return f"a{i}" if i is not None else self.program.const(t, "t")

    def _owner_of(self, arr: Any) -> Tensor | None:
        """The parameter or buffer of a module seen so far that holds ``arr``."""
        if self._module_arrays is None:
            self._module_arrays = {id(t.data): t for t in self.roots}
            for m in self.modules:
                for _, t in list(m.named_parameters()) + list(m.named_buffers()):
                    if t is not None:
                        self._module_arrays[id(t.data)] = t
        return self._module_arrays.get(id(arr))

    def tensor_slot(self, t: Tensor, what: str) -> int:
        """The slot holding ``t``'s array at this point of the program."""
        arr = t.data
        slot = self.id2slot.get(id(arr))
        if slot is not None:
            return slot
        origin = self.born.get(id(t))
        if origin is None:
            source = self.obj(t)  # a tensor from before the call: read it when the replay gets here
        else:
            owner = self._owner_of(arr)
            if owner is not None:
                source = self.obj(owner)
            elif id(t) in self.grad_owner:
                source = self.obj(self.grad_owner[id(t)]) + ".grad"
            else:
                self.fail(what, f"it uses the result of {origin}, which is computed outside the "
                          "recorded ops (array math on a tensor's .data, such as the label cast "
                          "of a loss given int32 labels), so a replay cannot recompute it")
                return -1
        slot = self.program.new_slot(arr, "r")
        self.program.add("read", "read", f"{source}.data", [], [slot])
        self.file(arr, slot)
        self._volatile.add(slot)
        return slot

    def value(self, v: Any, what: str) -> tuple[str, list[int]]:
        """The replay's expression for an argument value, and the slots it reads."""
        if v.__class__ in _LITERALS and (v.__class__ is not float or math.isfinite(v)):
            return repr(v), []  # (inf and nan are names, not literals: constants below)
        slot = self.id2slot.get(id(v))
        if slot is not None:  # produced by a step (an array, or a NumPy scalar)
            return self.program.slots[slot].name, [slot]
        if v.__class__ is Tensor:
            if id(v) in self.born:
                s = self.tensor_slot(v, what)
                name = self.program.slots[s].name
                dev = self.program.const(v.device, "dev")
                return f"{self.program.const(Tensor._wrap, 'wrap')}({name}, {dev})", [s]
            return self.obj(v), []
        if isinstance(v, np.ndarray) or hasattr(v, "__cuda_array_interface__"):
            owner = self._owner_of(v)
            if owner is not None:
                s = self.tensor_slot(owner, what)
                return self.program.slots[s].name, [s]
            if id(v) not in self._constants:
                self.fail(what, f"it takes an array of shape {tuple(v.shape)} that was computed "
                          "outside the recorded ops, so a replay would reuse the value of the "
                          "first call (index with tensors or lists)")
                return "None", []
            return self.program.const(v), []  # made from host data
        if isinstance(v, (tuple, list)) and v:
            parts = [self.value(x, what) for x in v]
            if any(uses for _, uses in parts) or any(x.__class__ is Tensor for x in v):
                body = ", ".join(e for e, _ in parts)
                uses = [s for _, u in parts for s in u]
                return (f"({body},)" if isinstance(v, tuple) else f"[{body}]"), uses
        return self.program.const(v), []

    # -- hooks (called from autograd, tensor, nn, optim) -------------------------------------------
    def on_apply(self, fn, inputs, arrays, params, result) -> None:
        op = type(fn).__name__
        if fn.source is not None:
            self.fail(f"{op} (a device move)", "a program runs on one device")
            return
        self._check_device(result, op)
        if self.failure is not None:
            return
        args: list[tuple[str, list[int]]] = []
        for t, a in zip(inputs, arrays):
            if t.__class__ is Tensor:
                s = self.tensor_slot(t, op)
                if s < 0:
                    return
                args.append((self.program.slots[s].name, [s]))
            else:
                args.append(self.value(a, op))
        kw = []
        for k, v in params.items():
            gen = fn.replay_params.get(k)
            if gen is not None:  # drawn anew per replay (dropout's key)
                kw.append((k, (f"{self.program.const(gen, 'gen')}"
                               f"({self.program.const(params, 'params')})", [])))
            else:
                kw.append((k, self.value(v, op)))
        call = ", ".join([e for e, _ in args] + [f"{k}={e}" for k, (e, _) in kw])
        code = f"{self.program.const(fn.forward, 'fwd')}({call})"
        if result.data.ndim == 0:
            code = f"{self.program.const(_fix_scalar, 'fix')}({code})"
        uses = [s for _, u in args for s in u] + [s for _, (_, u) in kw for s in u]
        out = self.produce(result.data)
        lowered = lower_forward(fn, list(arrays), result.data)
        if lowered is not None:
            lowered.operands = [e for e, _ in args]
        self.program.add("forward", op, code, uses, [out], lowered=lowered)
        self.born[id(result)] = op
        self._keep.append(result)
        self.forwards[fn] = (args, out)

    def call(self, func, args: tuple) -> Any:
        """``traced_call``: run ``func`` eagerly, unrecorded, and record it as one step."""
        owner = getattr(func, "__self__", None)
        label = getattr(func, "__name__", "call").lstrip("_")
        if owner is not None:  # a bound method: name the optimizer or module class
            label = f"{type(owner).__name__}.{label}"
        parts = [self.value(a, label) for a in args]
        if self.failure is not None:
            return func(*args)
        with self.suspended():
            result = func(*args)
        if self.failure is not None:
            return result
        replayed = func
        fast = getattr(owner, "replay_fast_path", None)
        if fast is not None and self.device is not None and self.device.type == "cpu" \
                and lowering_enabled():
            replayed = fast(func) or func
            if replayed is not func:
                label += " (specialised)"
        code = f"{self.program.const(replayed, 'call')}({', '.join(e for e, _ in parts)})"
        uses = [s for _, u in parts for s in u]
        targets: list[int | None] = []
        if result.__class__ is Tensor:
            code += ".data"
            targets = [self.produce(result.data)]
            self.born[id(result)] = label
            self._keep.append(result)
        elif isinstance(result, tuple):  # several values, each a slot (None: not kept)
            targets = [None if r is None else self.produce(r) for r in result]
        elif result is not None:
            targets = [self.produce(result)]
        self.program.add("call", label, code, uses, targets, unpack=isinstance(result, tuple))
        for s in uses:
            self.program.slots[s].escapes = True
        self.forget_volatile()
        return result

    def constant(self, array: Any) -> None:
        self._constants.add(id(array))
        self._keep.append(array)

    def on_rebind(self, t: Tensor) -> None:
        """``t.data`` was replaced by an in-place op (``+=``, ``copy_``, ``t[i] = v``)."""
        if id(t) in self.born:
            return  # made during the call: followed through its array
        slot = self.id2slot.get(id(t.data))
        if slot is None:
            self.fail("an in-place update of a tensor from data computed outside the recorded "
                      "ops (fill_, zero_, copy_ without grad)", "the replay could not recompute "
                      "the new value")
            return
        self._check_device(t, "an in-place update")
        self.program.add("write", "rebind", f"{self.obj(t)}.data = {self.program.slots[slot].name}",
                         [slot], [])
        self.program.slots[slot].escapes = True

    def on_grad_set(self, t: Tensor) -> None:
        """``t.grad = value`` in the compiled function (not in a recorded update)."""
        g = t.grad
        if g is None:
            code = f"{self.obj(t)}.grad = None"
            uses: list[int] = []
        else:
            if g.__class__ is not Tensor:
                return  # the setter's caller fails on it eagerly
            expr, uses = self.value(g, "assigning .grad")
            code = f"{self.obj(t)}.grad = {expr}"
        self.program.add("write", ".grad =", code, uses, [])
        for s in uses:
            self.program.slots[s].escapes = True

    def on_host_read(self, t: Tensor, what: str) -> None:
        self.fail(f"{what} on a tensor of shape {t.shape}",
                  "it reads the value on the host, and Python code that depends on a value is "
                  "not part of the program (a replay would reuse the value of the first call); "
                  "return the tensor and read it after the call")

    def on_untracked(self, t: Tensor) -> None:
        code = sys._getframe(2).f_code  # what called Tensor._wrap
        if code.co_filename.endswith("creation.py"):
            if code.co_name != "_random":
                return  # gg.zeros, gg.arange, ...: a constant, like gg.tensor(host data)
            origin = "gg.randn/rand/randint (host random numbers, which a replay would repeat)"
        else:
            origin = f"{code.co_name}()"
        self.born[id(t)] = origin
        self._keep.append(t)

    def add_roots(self, fn: Any) -> None:
        """Note the tensors and modules ``fn`` refers to by name (closure cells, globals, its
        ``self``), so arrays wrapped anew from them during the call are known as theirs."""
        code = getattr(fn, "__code__", None)
        objs: list[Any] = [getattr(fn, "__self__", None)]
        objs += [c.cell_contents for c in (getattr(fn, "__closure__", None) or ())
                 if _filled(c)]
        if code is not None:
            g = getattr(fn, "__globals__", {})
            objs += [g[n] for n in code.co_names if n in g]
        self.note(objs)

    def note(self, objs: list[Any]) -> None:
        """Note the tensors and modules among ``objs`` (and in lists, tuples, dicts of them)."""
        for obj in objs:
            items = obj.values() if isinstance(obj, dict) else \
                obj if isinstance(obj, (list, tuple)) else (obj,)
            for o in items:
                if o.__class__ is Tensor:
                    self.roots.append(o)
                elif not isinstance(o, type) and hasattr(o, "named_parameters") \
                        and hasattr(o, "training"):
                    self.on_module(o)
        self._module_arrays = None

    def on_new_tensor(self, t: Tensor, data: Any) -> None:
        """``gg.tensor(data)``: a constant when built from host data, but a copy of a tensor
        (or of a slot's array) made outside the recorded ops otherwise."""
        if data.__class__ is Tensor or id(data) in self.id2slot:
            self.born[id(t)] = "gg.tensor() of a tensor (a copy outside the recorded ops; use " \
                "t.clone() or t.detach())"
            self._keep.append(t)

    def on_module(self, module: Any) -> None:
        if id(module) not in self._module_ids:
            self._module_ids.add(id(module))
            self.modules.append(module)
            self._module_arrays = None

    def backward(self, tensor: Tensor, gradient: Any, retain_graph: bool,
                 create_graph: bool) -> None:
        from .walk import record_backward

        record_backward(self, tensor, gradient, retain_graph, create_graph)
