"""A traced program: steps over named slots, turned into one generated Python function.

Each step is a line of Python that calls a prebound callable (a Function's ``forward`` or
``backward``, an optimizer update, ...) on slots -- local variables of the generated function --
and constants. A slot is deleted right after its last use (the liveness-based memory plan), so a
replay holds no more intermediates than it needs. Generating the code, rather than looping over a
list of callables, makes a replayed op cost one Python call: locals, no dispatch, no Tensors.

Lowered steps (``lower.py``, CPU only) instead write into buffers the program owns (``out=``),
allocated once by ``finish`` and shared by slots of one shape and dtype whose lives do not
overlap (the buffer plan). A slot's life is that of every slot aliasing its memory (a view a
later step returns, a gradient handed on as it is), found at trace time from the arrays' bases.
A buffer whose value escapes -- a ``.grad``, a returned tensor, an argument of a recorded update,
a rebound ``.data`` -- is never shared, and a replay writes into it only when nothing outside the
program holds it any more (its reference count, checked before the write); otherwise the step
gets a new buffer, so an array a caller kept is never overwritten.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .lower import UFUNCS, Lowered


class CompileError(RuntimeError):
    """A compiled function did something a static program cannot replay."""


@dataclass
class Slot:
    """One value a step produces: its variable name and what it held when traced."""

    name: str
    shape: tuple | None = None
    dtype: Any = None
    nbytes: int = 0
    escapes: bool = False  # stored where the step's caller can see it (a .grad, an output)
    root: int | None = None  # the slot whose memory this one's array shares (itself: None)
    strides: tuple | None = None  # its layout when traced
    buffer: int | None = None  # the program buffer a lowered step writes it into
    # a .grad's storage offered by the leaf's hook (``walk.grad_home``), until buffers exist
    home: Any = None


@dataclass
class Buffer:
    """A preallocated array of the buffer plan and the slots that live in it, in turn."""

    shape: tuple
    dtype: Any
    escapes: bool
    slots: list[int] = field(default_factory=list)
    home: bool = False  # the array is storage a hook offered (a communication bucket's)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class Step:
    """``targets = call`` (one line of the generated function)."""

    kind: str  # forward | backward | grad-add | leaf-grad | seed | read | call | write
    label: str
    code: str  # the right-hand side, or the whole statement when ``targets`` is empty
    uses: list[int] = field(default_factory=list)  # slot ids read
    targets: list[int | None] = field(default_factory=list)  # slot ids written (None: ignored)
    unpack: bool = False  # the call returns a sequence, one item per target
    lowered: Lowered | None = None  # array calls into buffers replacing ``code`` (lower.py)
    scratch: list[int] = field(default_factory=list)  # slots of the lowered lines' {tK}
    # what ``code`` reduces to when the slot it reads is a program buffer (an array of its own,
    # never a view): statements, replacing the generic call in that case
    buffered_code: str | None = None


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
        self.buffers: list[Buffer] = []
        self._owners: dict[int, tuple[int, Any]] = {}  # id(owning array) -> (root slot, array)
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
        self.slots.append(Slot(f"{prefix}{len(self.slots)}", shape, dtype, nbytes,
                               strides=getattr(value, "strides", None)))
        slot = len(self.slots) - 1
        if value.__class__ is np.ndarray:
            self.slots[slot].root = self._alias_root(value, slot)
        return slot

    def _alias_root(self, value: np.ndarray, slot: int) -> int | None:
        """The earlier slot whose memory ``value`` shares (None: its own), by following
        ``.base`` to the owning array (NumPy collapses view chains); a base that is not an
        array (``as_strided``'s) falls back to comparing memory bounds with every owner."""
        owner = value
        while owner.base.__class__ is np.ndarray:
            owner = owner.base
        found = self._owners.get(id(owner))
        if found is None and owner.base is not None:
            found = next(((r, a) for r, a in self._owners.values()
                          if np.may_share_memory(value, a)), None)
        if found is not None:
            return found[0] if found[0] != slot else None
        self._owners[id(owner)] = (slot, owner)  # the array stays alive: ids are not reused
        return None

    def new_scratch(self, shape: tuple, dtype: Any) -> int:
        """A slot for a lowered step's scratch buffer (dead when the step ends)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        self.slots.append(Slot(f"scr{len(self.slots)}", tuple(shape), dtype, nbytes))
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
            targets: list[int | None], unpack: bool = False,
            lowered: Lowered | None = None) -> Step:
        step = Step(kind, label, code, list(uses), list(targets), unpack)
        if lowered is not None and self._lowerable(step):
            step.lowered = lowered
            step.scratch = [self.new_scratch(shape, dt) for shape, dt in lowered.scratch]
        self.steps.append(step)
        return step

    def _lowerable(self, step: Step) -> bool:
        """Every kept output is a fresh array of its own (not a view of another slot)."""
        return all(self.slots[t].root is None and self.slots[t].shape is not None
                   for t in step.targets if t is not None)

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
        """Plan the buffers, then generate and compile the replay function."""
        self._owners.clear()  # trace-time only: the traced arrays may be released
        frees = self._frees()
        self._assign()
        checked = set(self.inputs)  # the signature fixes the arguments' layout
        # a read (of a parameter, a buffer) before any update could change it is checked at the
        # replay's start; the others where they are used
        first_update = next((i for i, step in enumerate(self.steps)
                             if step.kind in ("call", "write")), len(self.steps))
        early_reads = {step.targets[0]: step.code[:-len(".data")]
                       for step in self.steps[:first_update]
                       if step.kind == "read" and _PLAIN_READ.match(step.code)}
        entry_checks: list[str] = []
        escaping = [b for b in range(len(self.buffers)) if self.buffers[b].escapes]
        args = ", ".join(f"a{i}" for i in range(len(self.inputs)))
        lines = [f"def replay({args}):"]
        if escaping:
            lines.append(f"    global {', '.join(f'B{b}' for b in escaping)}")
        for i, s in enumerate(self.inputs):
            lines.append(f"    {self.slots[s].name} = a{i}.data")
        for step, free in zip(self.steps, frees):
            if step.lowered is not None:
                for u in step.uses:
                    if u not in checked and self.slots[u].buffer is None:
                        if u in early_reads:
                            entry_checks.append(self._layout_check(u, early_reads[u]))
                        else:
                            lines.append(self._layout_check(u))
                        checked.add(u)
                lines += self._lowered_lines(step)
            elif step.buffered_code is not None and self.slots[step.uses[0]].buffer is not None:
                lines += ["    " + line for line in step.buffered_code.split("\n")]
            elif step.targets:
                names = [self.slots[t].name if t is not None else "_" for t in step.targets]
                lhs = "(" + ", ".join(names) + ",)" if step.unpack else names[0]
                lines.append(f"    {lhs} = {step.code}")
            else:
                lines.append(f"    {step.code}")
            dead = [self.slots[s].name for s in free + step.scratch]
            if dead:
                lines.append(f"    del {', '.join(dead)}")
        outs = ", ".join(self.slots[s].name for s in self.outputs)
        lines.append(f"    return ({outs}{',' if self.outputs else ''})")
        at = 2 if escaping else 1  # after ``def`` and ``global``: before any step runs
        lines[at:at] = entry_checks
        self.source = "\n".join(lines) + "\n"
        homes = {self.slots[s].buffer: self.slots[s].home for s in range(len(self.slots))
                 if self.slots[s].home is not None and self.slots[s].buffer is not None}
        for slot in self.slots:
            slot.home = None  # the namespace alone holds a buffer (see the replay's refs check)
        for b, buf in enumerate(self.buffers):
            buf.home = b in homes
            self.namespace[f"B{b}"] = homes.pop(b) if buf.home else np.empty(buf.shape, buf.dtype)
        homes.clear()
        if self.buffers:
            self.namespace.update(UFUNCS, refs=sys.getrefcount, fresh=np.empty_like,
                                  stale=_stale, STALE=STALE)
        code = compile(self.source, f"<gg.compile {self.name}>", "exec")
        exec(code, self.namespace)  # noqa: S102 -- our own generated source
        self.replay = self.namespace["replay"]

    def _assign(self) -> None:
        """The buffer plan: each slot a lowered step writes gets a buffer -- a free one of its
        shape and dtype, or a new one. A buffer is free again after the last use of every slot
        aliasing the slot it holds; one that escapes is never shared. A step's outputs get
        their buffers before its operands' are released, so no step writes into an operand."""
        last = self._last_uses()
        end: dict[int, int] = {}  # root slot -> last use of it or of any slot aliasing it
        escapes: set[int] = set()
        for s, slot in enumerate(self.slots):
            r = s if slot.root is None else slot.root
            end[r] = max(end.get(r, -1), last.get(s, -1))
            if slot.escapes or s in self.outputs:
                escapes.add(r)
        free: dict[tuple, list[int]] = {}
        release_at: dict[int, list[int]] = {}  # step -> buffers free after it
        self.buffers = []
        for i, step in enumerate(self.steps):
            if step.lowered is not None:
                for s in [t for t in step.targets if t is not None] + step.scratch:
                    slot = self.slots[s]
                    pool = free.get((slot.shape, slot.dtype.str))
                    if s in escapes or not pool:
                        slot.buffer = len(self.buffers)
                        self.buffers.append(Buffer(slot.shape, slot.dtype, s in escapes))
                    else:
                        slot.buffer = pool.pop()
                    self.buffers[slot.buffer].slots.append(s)
                    if s not in escapes:
                        done = i if s in step.scratch else max(end.get(s, i), i)
                        release_at.setdefault(done, []).append(slot.buffer)
            for b in release_at.pop(i, ()):
                buf = self.buffers[b]
                free.setdefault((buf.shape, buf.dtype.str), []).append(b)

    def _lowered_lines(self, step: Step) -> list[str]:
        names = {f"a{k}": e for k, e in enumerate(step.lowered.operands)}
        names.update({k: self.const(v, "lc") for k, v in step.lowered.consts.items()})
        names["generic"] = step.code
        names.update({f"t{k}": self.slots[s].name for k, s in enumerate(step.scratch)})
        lines = []
        for k, t in enumerate(step.targets):
            if t is not None:
                names[f"o{k}"] = self.slots[t].name
        for s in [t for t in step.targets if t is not None] + step.scratch:
            slot, b = self.slots[s], self.slots[s].buffer
            lines.append(f"    {slot.name} = B{b}")
            if self.buffers[b].escapes:  # never write into an array someone else holds
                lines.append(f"    if refs({slot.name}) > {_SOLE_REFS}: "
                             f"{slot.name} = B{b} = fresh({slot.name})")
        return lines + ["    " + line.format_map(names) for line in step.lowered.lines]

    def _layout_check(self, s: int, tensor: str | None = None) -> str:
        """A replay line: ``s``, an operand of a lowered step, must still have its traced shape
        and dtype, or the step would write into a buffer of the old layout. A parameter or
        buffer (``tensor``, read at the replay's start, before any step has run) that changed
        -- after ``model.double()``, say, or to another memory order, which eager's results
        would follow -- makes the replay return ``STALE``, and the caller traces again; a
        change found mid-replay (a generic step's result) raises."""
        slot = self.slots[s]
        dt = self.const(np.dtype(slot.dtype), "dt")
        if tensor is not None:  # its layout too, as the signature fixes the arguments'
            arr = f"{tensor}.data"
            return (f"    if {arr}.shape != {slot.shape!r} or {arr}.dtype != {dt} "
                    f"or {arr}.strides != {slot.strides!r}: return STALE")
        return (f"    if {slot.name}.shape != {slot.shape!r} or {slot.name}.dtype != {dt}: "
                f"stale({self.name!r}, {slot.name}, {slot.shape!r}, {dt})")

    # -- the listing -----------------------------------------------------------------------------
    def memory_plan(self) -> tuple[int, int]:
        """(peak bytes of intermediates alive during a replay, bytes of all slots). The plan's
        buffers count whole for the whole replay (allocated once, held by the program); other
        slots count from the step producing them to their last use, or to the end when they
        escape (into a .grad, an output, an update's arguments: something else may hold them)."""
        return self._peak(True), sum(s.nbytes for s in self.slots)

    def unbuffered_peak(self) -> int:
        """The peak bytes alive if every step allocated its result afresh (as eager ops do)."""
        return self._peak(False)

    def _peak(self, buffered: bool) -> int:
        frees = self._frees()
        own = (lambda s: self.slots[s].buffer is None) if buffered else (lambda s: True)
        live = sum(self.slots[s].nbytes for s in self.inputs)
        if buffered:
            live += sum(b.nbytes for b in self.buffers)
        peak = live
        for step, free in zip(self.steps, frees):
            made = [t for t in step.targets if t is not None]
            if not buffered:
                made += step.scratch
            live += sum(self.slots[t].nbytes for t in made if own(t))
            peak = max(peak, live)
            live -= sum(self.slots[s].nbytes for s in free + (step.scratch if not buffered else [])
                        if own(s) and not self.slots[s].escapes)
        return peak

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
            at = "" if slot.buffer is None else f"@B{slot.buffer}"
            return f"{slot.name}{mark}[{'x'.join(map(str, slot.shape)) or '()'} {dt}]{at}"

        peak, total = self.memory_plan()
        lowered = sum(step.lowered is not None for step in self.steps)
        head = (f"gg.compile program {self.name} on {self.device}: {len(self.steps)} steps "
                f"({lowered} written as array calls into buffers, out=), {len(self.slots)} slots")
        lines = [head, "inputs: " + (", ".join(show(s) for s in self.inputs) or "none")]
        for i, (step, free) in enumerate(zip(self.steps, frees)):
            outs = ", ".join(show(t) for t in step.targets + step.scratch if t is not None) or "-"
            ins = ", ".join(self.slots[s].name for s in step.uses) or "-"
            size = sum(self.slots[t].nbytes for t in step.targets if t is not None)
            row = f"{i:4d} {step.kind:<9} {step.label:<22} {ins:<24} -> {outs} ({_bytes(size)})"
            if free:
                row += "  free " + ", ".join(self.slots[s].name for s in free)
            if step.lowered is not None:
                row += "  out="
            lines.append(row)
        lines.append("outputs: " + (", ".join(show(s) for s in self.outputs) or "none"))
        lines.append(
            f"memory plan: peak {_bytes(peak)} of intermediates alive during a replay (the "
            f"buffers below held throughout, between calls too), against "
            f"{_bytes(self.unbuffered_peak())} with a fresh array per op, each alive from the op "
            f"to its last use; {_bytes(total)} if every slot were kept to the end. * = kept by "
            "something else (a .grad, an output)")
        if self.buffers:
            shared = [b for b in self.buffers if not b.escapes]
            own = [b for b in self.buffers if b.escapes]
            held = sum(self.slots[s].nbytes for b in shared for s in b.slots)
            lines.append(
                f"buffers (@Bn, allocated once): {len(shared)} shared, "
                f"{_bytes(sum(b.nbytes for b in shared))} for {sum(len(b.slots) for b in shared)} "
                f"slots of {_bytes(held)}, each reused once the slot it held and every view of "
                f"it are dead; {len(own)} escaping ({_bytes(sum(b.nbytes for b in own))}: "
                ".grads, outputs), written again only when nothing outside the program holds "
                "them, else replaced by a new array")
            homed = [b for b in own if b.home]
            if homed:
                lines.append(f"{len(homed)} of the escaping buffers "
                             f"({_bytes(sum(b.nbytes for b in homed))}) are .grad storage that "
                             "a hook offered (DataParallel's bucket views): gradients are "
                             "written there directly, with no copy to send them")
        return "\n".join(lines + self.notes)


STALE = object()  # what a replay returns when its parameters' layout is no longer the traced one
_PLAIN_READ = re.compile(r"^[at]\d+\.data$")  # an argument's or a captured tensor's array


def _stale(name: str, array: Any, shape: tuple, dtype: Any) -> None:
    raise CompileError(
        f"gg.compile({name}): a tensor the program reads changed from shape {shape} {dtype} "
        f"(when traced) to {tuple(array.shape)} {array.dtype}; its steps write into buffers of "
        "the traced layout. Compile the function again after changing a model's dtype or shapes")


def _probe_refs() -> int:
    """What ``refs(local)`` gives for a buffer held only by the namespace and that local (how
    many references a call adds differs between Python versions), measured as a replay does."""
    ns: dict[str, Any] = {"refs": sys.getrefcount, "B": np.empty(1)}
    exec("def probe():\n    b = B\n    return refs(b)\n", ns)  # noqa: S102
    return ns["probe"]()


_SOLE_REFS = _probe_refs()


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
