"""CUDA replay of a compiled program: captured graph segments between eager steps.

The first replay on a GPU is the capture pass: it walks the program's steps once. Runs of device
steps (forward and backward calls, gradient seeds) are captured into CUDA graphs
(``backend.cuda_graph``); the other steps run eagerly, in Python, at every replay:

- GEMM steps (``Linear``, ``MatMul`` forward and backward): CuPy 14.2 refuses cuBLAS during
  capture (cupy#6290), so the program is split into captured segments around them;
- steps that read per-call host values: optimizer steps and ``zero_grad`` (``call`` steps, which
  read ``param_groups`` -- learning rate, Adam's step -- afresh), dropout (a fresh key per call),
  so no such value is baked into a graph;
- steps with Python effects: reading a parameter's array, setting ``.grad``, rebinding ``.data``.

Graphs read and write fixed addresses, so every array they touch is made once, in the capture
pass, from the program's private pool: the inputs are copied into their buffers at each replay,
and an eager step's result that a graph reads is copied into the buffer the graph was captured
with. Returned arrays are copied out, so each call returns new arrays as eager code does; a
``.grad`` a replay sets is the program's buffer, overwritten by the next replay.

If a capture fails (a step reads the device, or calls cuBLAS outside the GEMM ops), the failed
segment runs eagerly and the program falls back to uncaptured replay, saying so once.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

from .program import Program

GEMM_OPS = frozenset({"Linear", "MatMul"})
_EAGER_KINDS = frozenset({"read", "write", "call", "leaf-grad"})
_DRAWS_PER_CALL = re.compile(r"\bgen\d+\(")  # a value drawn anew per replay (dropout's key)
_ARGUMENT = re.compile(r"\ba\d+\b")  # an argument tensor itself (new per call)
_CALLS = re.compile(r"\b((?:fwd|bwd)\d+)\(")


def graphs_enabled() -> bool:
    """CUDA replay captures graphs unless ``GPUGRAD_CUDA_GRAPHS=0``."""
    return os.environ.get("GPUGRAD_CUDA_GRAPHS", "1").strip() != "0"


def eager_reason(step: Any) -> str | None:
    """Why a step runs eagerly at every replay, or None when it is captured."""
    if step.kind in _EAGER_KINDS:
        return step.kind
    if step.label in GEMM_OPS:
        return "gemm"
    if _DRAWS_PER_CALL.search(step.code) or _ARGUMENT.search(step.code):
        return "per-call value"
    return None


def eager_reasons(prog: Program) -> list[str | None]:
    """``eager_reason`` of each step; the backward of a Function whose forward runs eagerly runs
    eagerly too, since the forward may keep per-call state on the Function (dropout's mask)."""
    reasons = [eager_reason(s) for s in prog.steps]
    eager_fns: set[int] = set()
    for step, why in zip(prog.steps, reasons):
        for name in _CALLS.findall(step.code):
            fn = getattr(prog.namespace.get(name), "__self__", None)
            if name.startswith("fwd") and why is not None:
                eager_fns.add(id(fn))
    for i, step in enumerate(prog.steps):
        if reasons[i] is None and step.kind == "backward":
            for name in _CALLS.findall(step.code):
                if id(getattr(prog.namespace.get(name), "__self__", None)) in eager_fns:
                    reasons[i] = "per-call value"
    return reasons


def _step_function(prog: Program, step: Any) -> Any:
    """``step`` as a function of the slot environment (a dict of slot name -> array)."""
    names = [prog.slots[s].name for s in step.uses]
    lines = ["def run(E):"]
    names += _ARGUMENT.findall(step.code)
    lines += [f"    {n} = E[{n!r}]" for n in dict.fromkeys(names)]
    targets = [prog.slots[t].name if t is not None else "_" for t in step.targets]
    if targets:
        lhs = "(" + ", ".join(targets) + ",)" if step.unpack else targets[0]
        lines.append(f"    {lhs} = {step.code}")
        lines += [f"    E[{n!r}] = {n}" for n in targets if n != "_"]
    else:
        lines.append(f"    {step.code}")
    namespace = dict(prog.namespace)
    exec(compile("\n".join(lines) + "\n", f"<gg.compile {prog.name} step>", "exec"),  # noqa: S102
         namespace)
    return namespace["run"]


class GraphedReplay:
    """A program's CUDA replay: built by its first replay (the capture pass)."""

    def __init__(self, program: Program) -> None:
        from ..backend.cuda_graph import GraphStream

        self.program = program
        self.gs = GraphStream(program.device.index)
        self.fns = [_step_function(program, s) for s in program.steps]
        self.eager = eager_reasons(program)
        self.actions: list[tuple] = []
        self.inputs: list[Any] = []  # the buffers the graphs read the arguments from
        self.base: dict[str, Any] = {}  # capture-time arrays eager steps read
        self.outputs: list[Any] = []  # the buffers the results are copied from
        self.captured = False
        self.failure: str | None = None

    # -- summary -----------------------------------------------------------------------------
    @property
    def segments(self) -> int:
        return sum(1 for a in self.actions if a[0] == "graph")

    def describe(self) -> str:
        steps = self.program.steps
        eager = sum(1 for r in self.eager if r is not None)
        gemm = sum(1 for r in self.eager if r == "gemm")
        if self.failure:
            return f"CUDA graphs: off ({self.failure})"
        return (f"CUDA graphs: {len(steps) - eager} of {len(steps)} steps captured in "
                f"{self.segments} graph(s); eager between them: {gemm} GEMM step(s), "
                f"{eager - gemm} host step(s) (reads, .grad, optimizer, per-call values)")

    # -- replay --------------------------------------------------------------------------------
    def __call__(self, tensors: list[Any]) -> tuple:
        if self.failure is not None:
            return self.program.replay(*tensors)
        with self.gs.running():
            if not self.captured:
                return self._capture(tensors)
            copy = self.gs.copy_into
            for buf, t in zip(self.inputs, tensors):
                copy(buf, t.data)
            env = dict(self.base)
            env.update((f"a{i}", t) for i, t in enumerate(tensors))
            for action in self.actions:
                if action[0] == "graph":
                    self.gs.launch(action[1], action[2])
                    continue
                _, fn, copies = action
                fn(env)
                for name, buf in copies:
                    new = env[name]
                    if new is not buf:
                        if new.shape != buf.shape or new.dtype != buf.dtype:
                            raise RuntimeError(
                                f"gg.compile({self.program.name}): {name} changed from "
                                f"{buf.shape} {buf.dtype} to {new.shape} {new.dtype} since the "
                                "CUDA graph was captured (a parameter replaced by one of another "
                                "shape?); call the function on a new signature or recompile")
                        copy(buf, new)
                        env[name] = buf
            return tuple(buf.copy() for buf in self.outputs)

    def _capture(self, tensors: list[Any]) -> tuple:
        from ..backend.cuda_graph import capture_error_reason

        prog, gs = self.program, self.gs
        frees = prog._frees()
        captured_reads = {s for st, r in zip(prog.steps, self.eager) if r is None
                          for s in st.uses} | set(prog.outputs)
        env: dict[str, Any] = {f"a{i}": t for i, t in enumerate(tensors)}
        with gs.private_memory():
            for s, t in zip(prog.inputs, tensors):
                buf = t.data.copy()
                self.inputs.append(buf)
                env[prog.slots[s].name] = buf
            segment: list[int] = []
            pending_frees: list[int] = []
            for i, step in enumerate(prog.steps):
                if self.eager[i] is None:
                    if not segment:
                        gs.begin()
                    segment.append(i)
                    try:
                        self.fns[i](env)
                    except Exception as exc:  # noqa: BLE001 -- any failure: eager from here
                        gs.abort()
                        return self._fall_back(capture_error_reason(exc), step, segment[0],
                                               env)
                    pending_frees += frees[i]
                    continue
                if segment:
                    self._end_segment()
                    segment = []
                    self._free(env, pending_frees)
                    pending_frees = []
                names = [prog.slots[s].name for s in step.uses]
                for n in names:
                    self.base.setdefault(n, env[n])
                self.fns[i](env)
                copies = []
                for t in step.targets:
                    if t is None:
                        continue
                    name = prog.slots[t].name
                    if t in captured_reads:
                        copies.append((name, env[name]))
                self.actions.append(("eager", self.fns[i], copies))
                self._free(env, frees[i])
            if segment:
                self._end_segment()
                self._free(env, pending_frees)
        # every output is a capture-time buffer: made by a graph, or an eager result's copy
        self.outputs = [env[prog.slots[s].name] for s in prog.outputs]
        self.captured = True
        prog.notes = [self.describe()]
        return tuple(buf.copy() for buf in self.outputs)

    def _end_segment(self) -> None:
        graph, rec = self.gs.end()
        self.actions.append(("graph", graph, rec))
        self.gs.launch(graph, rec)  # capture ran nothing: this call's values come from here

    def _free(self, env: dict[str, Any], slots: list[int]) -> None:
        for s in slots:
            if s not in self.program.inputs:
                env.pop(self.program.slots[s].name, None)

    def _fall_back(self, why: str, step: Any, start: int, env: dict[str, Any]) -> tuple:
        """Finish this call eagerly from the failed segment on; later calls replay uncaptured."""
        self.failure = f"step '{step.label}' cannot be captured: {why}"
        warnings.warn(f"gg.compile({self.program.name}): {self.failure}; this program replays "
                      "without CUDA graphs", RuntimeWarning, stacklevel=4)
        # the steps run so far this call were launched; the failed segment's were not
        self.actions, self.base, self.inputs = [], {}, []
        self.program.notes = [self.describe()]
        for i in range(start, len(self.program.steps)):
            self.fns[i](env)
        return tuple(env[self.program.slots[s].name] for s in self.program.outputs)
