"""A traced program: steps over named slots, turned into one generated Python function.

Each step is a line of Python that calls a prebound callable (a Function's ``forward`` or
``backward``, an optimizer update, ...) on slots -- local variables of the generated function --
and constants. A slot is deleted right after its last use (the liveness-based memory plan), so a
replay holds no more intermediates than it needs. Generating the code, rather than looping over a
list of callables, makes a replayed op cost one Python call: locals, no dispatch, no Tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Slot:
    """One value a step produces: its variable name and what it held when traced."""

    name: str
    shape: tuple | None = None
    dtype: Any = None
    nbytes: int = 0
    escapes: bool = False  # stored where the step's caller can see it (a .grad, an output)


@dataclass
class Step:
    """``targets = call`` (one line of the generated function)."""

    kind: str  # forward | backward | grad-add | leaf-grad | seed | read | call | write
    label: str
    code: str  # the right-hand side, or the whole statement when ``targets`` is empty
    uses: list[int] = field(default_factory=list)  # slot ids read
    targets: list[int | None] = field(default_factory=list)  # slot ids written (None: ignored)
    unpack: bool = False  # the call returns a sequence, one item per target


def describe(value: Any) -> tuple[tuple | None, Any, int]:
    """(shape, dtype, bytes) of an array-like value, or (None, None, 0)."""
    shape = getattr(value, "shape", None)
    if shape is None:
        return None, None, 0
    return tuple(shape), getattr(value, "dtype", None), int(getattr(value, "nbytes", 0))


class Program:
    """The steps of one traced call and the generated replay function."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.slots: list[Slot] = []
        self.steps: list[Step] = []
        self.namespace: dict[str, Any] = {"np": np}
        self._const_ids: dict[int, str] = {}
        self.inputs: list[int] = []  # slot ids of the tensor arguments' arrays
        self.outputs: list[int] = []  # slot ids returned
        self.device = None
        self.replay = None  # the generated function: (*tensor arguments) -> tuple of outputs
        self.source = ""
        self.notes: list[str] = []  # lines the listing ends with (how a GPU replays it)

    # -- building ------------------------------------------------------------------------------
    def new_slot(self, value: Any, prefix: str = "s") -> int:
        shape, dtype, nbytes = describe(value)
        self.slots.append(Slot(f"{prefix}{len(self.slots)}", shape, dtype, nbytes))
        return len(self.slots) - 1

    def const(self, value: Any, prefix: str = "k") -> str:
        """A name in the generated function's globals bound to ``value`` (one per object)."""
        key = id(value)
        name = self._const_ids.get(key)
        if name is None:
            name = f"{prefix}{len(self._const_ids)}"
            self._const_ids[key] = name
            self.namespace[name] = value
        return name

    def add(self, kind: str, label: str, code: str, uses: list[int],
            targets: list[int | None], unpack: bool = False) -> Step:
        step = Step(kind, label, code, list(uses), list(targets), unpack)
        self.steps.append(step)
        return step

    # -- liveness and code -----------------------------------------------------------------------
    def _last_uses(self) -> dict[int, int]:
        last: dict[int, int] = {}
        for i, step in enumerate(self.steps):
            for s in step.uses:
                last[s] = i
            for s in step.targets:
                if s is not None:
                    last.setdefault(s, i)  # produced and never read: dead at once
        for s in self.outputs:
            last[s] = len(self.steps)
        return last

    def _frees(self) -> list[list[int]]:
        frees: list[list[int]] = [[] for _ in self.steps]
        for s, i in self._last_uses().items():
            if i < len(self.steps) and s not in self.inputs:
                frees[i].append(s)
        return frees

    def finish(self) -> None:
        """Generate and compile the replay function."""
        frees = self._frees()
        args = ", ".join(f"a{i}" for i in range(len(self.inputs)))
        lines = [f"def replay({args}):"]
        for i, s in enumerate(self.inputs):
            lines.append(f"    {self.slots[s].name} = a{i}.data")
        for step, free in zip(self.steps, frees):
            if step.targets:
                names = [self.slots[t].name if t is not None else "_" for t in step.targets]
                lhs = "(" + ", ".join(names) + ",)" if step.unpack else names[0]
                lines.append(f"    {lhs} = {step.code}")
            else:
                lines.append(f"    {step.code}")
            dead = [self.slots[s].name for s in free]
            if dead:
                lines.append(f"    del {', '.join(dead)}")
        outs = ", ".join(self.slots[s].name for s in self.outputs)
        lines.append(f"    return ({outs}{',' if self.outputs else ''})")
        self.source = "\n".join(lines) + "\n"
        code = compile(self.source, f"<gg.compile {self.name}>", "exec")
        exec(code, self.namespace)  # noqa: S102 -- our own generated source
        self.replay = self.namespace["replay"]

    # -- the listing -----------------------------------------------------------------------------
    def memory_plan(self) -> tuple[int, int]:
        """(peak bytes alive with slots freed after their last use, bytes of all slots). A slot
        that escapes (into a .grad, an output, an update's arguments) counts as alive to the
        end, since something else may still hold it."""
        frees = self._frees()
        live = sum(self.slots[s].nbytes for s in self.inputs)
        peak = live
        for step, free in zip(self.steps, frees):
            live += sum(self.slots[t].nbytes for t in step.targets if t is not None)
            peak = max(peak, live)
            live -= sum(self.slots[s].nbytes for s in free if not self.slots[s].escapes)
        return peak, sum(s.nbytes for s in self.slots)

    def __str__(self) -> str:
        return self.listing()

    __repr__ = __str__

    def listing(self) -> str:
        frees = self._frees()

        def show(s: int) -> str:
            slot = self.slots[s]
            if slot.shape is None:
                return slot.name
            dt = np.dtype(slot.dtype).name if slot.dtype is not None else "?"
            mark = "*" if slot.escapes else ""
            return f"{slot.name}{mark}[{'x'.join(map(str, slot.shape)) or '()'} {dt}]"

        peak, total = self.memory_plan()
        head = (f"gg.compile program {self.name} on {self.device}: {len(self.steps)} steps, "
                f"{len(self.slots)} slots")
        lines = [head, "inputs: " + (", ".join(show(s) for s in self.inputs) or "none")]
        for i, (step, free) in enumerate(zip(self.steps, frees)):
            outs = ", ".join(show(t) for t in step.targets if t is not None) or "-"
            ins = ", ".join(self.slots[s].name for s in step.uses) or "-"
            size = sum(self.slots[t].nbytes for t in step.targets if t is not None)
            row = f"{i:4d} {step.kind:<9} {step.label:<22} {ins:<24} -> {outs} ({_bytes(size)})"
            if free:
                row += "  free " + ", ".join(self.slots[s].name for s in free)
            lines.append(row)
        lines.append("outputs: " + (", ".join(show(s) for s in self.outputs) or "none"))
        lines.append(f"memory plan: peak {_bytes(peak)} of intermediates alive (each slot freed "
                     f"after its last use; * = kept by something else: a .grad, an output); "
                     f"{_bytes(total)} if every slot were kept to the end")
        return "\n".join(lines + self.notes)


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
