"""``backward()`` under ``gg.compile``: the array-mode walk of ``autograd.run_backward`` (same
order, same derivative calls, same accumulations, same rules for leaf ``.grad``), run eagerly
while each of its steps is written into the program."""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np

from .. import autograd
from ..autograd import FREED, Function
from ..backend import fp_errors
from ..tensor import Tensor
from .lower import lower_backward


def leaf_grad(t: Tensor, gi: Any, must_copy: bool) -> Any:
    """Store ``gi`` into a leaf's ``.grad`` exactly as ``run_backward`` does; returns the array
    handed over (``gi`` or its copy)."""
    if isinstance(gi, np.generic):  # NumPy's 0-d results are scalars
        gi = np.array(gi)
    # A rule may hand one array to several inputs (add returns g, g) or a view of it; a leaf's
    # .grad must own its memory.
    if must_copy or gi.base is not None:
        gi = gi.copy()
    if t.grad is None and gi.shape == t.data.shape:
        t.grad = Tensor._wrap(gi, t.device)
    else:
        t._accumulate_grad(gi)
    return gi


def grad_home(t: Tensor, gi: Any) -> Any:
    """Storage a post-accumulate hook of ``t`` offers for its ``.grad`` (``hook.grad_buffer(t)``,
    a new array or view per call), if it has ``gi``'s type, shape and dtype and is contiguous:
    the program's buffer for that ``.grad`` is then this array, and the backward step writes the
    gradient straight into it. DataParallel offers this rank's slot of a shared-memory bucket,
    so a replayed backward leaves nothing to copy before the gradients are summed."""
    entry = autograd._grad_hooks.get(id(t))
    if entry is None or entry[0]() is not t:
        return None
    for hook in entry[1]:
        offer = getattr(hook, "grad_buffer", None)
        home = offer(t) if offer is not None else None
        if (home is not None and home.__class__ is gi.__class__ and home.shape == gi.shape
                and home.dtype == gi.dtype and home.flags.c_contiguous):
            return home
    return None


def _unrecorded(tracer, tensor: Tensor) -> str | None:
    """Why the graph behind ``tensor`` cannot be replayed, if it cannot."""
    stack = [tensor._ctx] if tensor._ctx is not None else []
    seen: set[int] = set()
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        if fn not in tracer.forwards:
            return (f"it reaches {type(fn).__name__}, an op computed before the compiled "
                    "function was called")
        if fn.saved is FREED:
            return None  # eager raises its own error below
        stack.extend(e for e in fn.edges if isinstance(e, Function))
    return None


def record_backward(tracer, tensor: Tensor, gradient: Any, retain_graph: bool,
                    create_graph: bool) -> None:
    prog = tracer.program
    why = None
    if create_graph:
        why = "a differentiable backward (create_graph=True) builds a graph at run time"
    elif (autograd._grad_hooks or autograd._backward_done) and _after_walk() is None:
        why = ("post-accumulate-grad hooks or backward-done callbacks are registered; they run "
               "Python code during the walk that a replay would skip")
    elif gradient is not None and gradient.__class__ is not Tensor:
        why = "its gradient= is not a Tensor (pass a tensor)"
    else:
        why = _unrecorded(tracer, tensor)
    if why is not None:
        tracer.fail("backward()", why)
    else:
        tracer._check_device(tensor, "backward()")
    src = None
    if tracer.failure is None and gradient is not None and tensor.requires_grad:
        src = tracer.tensor_slot(gradient, "backward()")
    if tracer.failure is not None or not tensor.requires_grad:
        with tracer.suspended():  # eager: runs it, or raises eager's error
            return autograd.backward(tensor, gradient, retain_graph, create_graph)
    with tracer.suspended():  # eager's checks and seed
        seed = autograd._seed_gradient(tensor, gradient, False, "backward")
    if src is None:
        dt = prog.const(tensor.dtype, "dt")
        if tensor.device.type == "cpu" and tensor.shape == ():  # np.ones is Python; this is not
            code = f"np.array(1, dtype={dt})"
        else:
            code = f"{prog.const(tensor.device.xp, 'xp')}.ones({tensor.shape!r}, dtype={dt})"
        uses = []
    else:
        code = f"{prog.slots[src].name}.astype({prog.const(tensor.dtype, 'dt')}, copy=True)"
        uses = [src]
    g0 = prog.new_slot(seed)
    prog.add("seed", "seed", code, uses, [g0])
    dev = tensor.device
    prev_mode = autograd._grad_mode.enabled
    autograd._grad_mode.enabled = False
    fp_token = fp_errors.quiet()  # as run_backward: inf/NaN gradients are no warnings
    try:
        with tracer.suspended(), dev.activate():
            written = _walk(tracer, tensor, seed, g0, retain_graph)
    finally:
        fp_errors.restore(fp_token)
        autograd._grad_mode.enabled = prev_mode
    tracer.forget_volatile()
    for make in _after_walk() or ():
        update = make(written)
        if update is not None:
            tracer.call(update, ())  # run now, and by every replay after this walk's steps


def _after_walk() -> list | None:
    """The recorded form of the registered hooks, or None if some cannot be recorded.

    A hook may do its work in a backward-done callback that says how to record it (as
    DataParallel's gradient average does): the hook carries ``replayed_by_callback = True``
    and the callback ``compile_step``, a function of the ids of the leaves whose ``.grad`` the
    walk wrote that returns the update to record (or None)."""
    for _, hooks in autograd._grad_hooks.values():
        if not all(getattr(h, "replayed_by_callback", False) for h in hooks):
            return None
    makers = [getattr(cb, "compile_step", None) for cb in autograd._backward_done]
    return None if None in makers else makers


def _walk(tracer, tensor: Tensor, seed: Any, g0: int, retain_graph: bool) -> set[int]:
    """Run and record the walk; returns the ids of the leaves whose ``.grad`` it wrote."""
    prog = tracer.program
    leaf_fn = prog.const(leaf_grad, "leaf")

    def write_leaf(edge: Tensor, gi: Any, slot: int, handed: set) -> None:
        must_copy = id(gi) in handed
        leaf, name = tracer.obj(edge), prog.slots[slot].name
        step = prog.add("leaf-grad", "leaf .grad", f"{leaf_fn}({leaf}, {name}, {must_copy})",
                        [slot], [])
        if not must_copy:  # leaf_grad's usual case, for a gradient in a buffer (its own memory)
            wrap = prog.const(Tensor._wrap, "wrap")
            step.buffered_code = (f"if {leaf}.grad is None and {leaf}.data.shape == "
                                  f"{tuple(edge.data.shape)!r}: "
                                  f"{leaf}.grad = {wrap}({name}, {leaf}.device)\nelse: {step.code}")
        prog.slots[slot].escapes = True
        if not must_copy:
            prog.slots[slot].home = grad_home(edge, gi)
        handed.add(id(leaf_grad(edge, gi, must_copy)))
        written.add(id(edge))
        tracer.born[id(edge.grad)] = "a backward walk"
        tracer.grad_owner[id(edge.grad)] = edge
        tracer._keep.append(edge.grad)
        gslot = tracer.id2slot.get(id(edge.grad.data))
        if gslot is not None:
            tracer._volatile.add(gslot)

    handed: set[int] = set()
    written: set[int] = set()
    fn0 = tensor._ctx
    if fn0 is None:
        write_leaf(tensor, seed, g0, handed)
        return written
    grads: dict[Function, tuple[Any, int]] = {fn0: (seed, g0)}
    heap = [(-fn0.seq, fn0)]
    while heap:
        fn = heapq.heappop(heap)[1]
        g, gslot = grads.pop(fn)
        saved = fn.saved
        if saved is FREED:
            raise RuntimeError(
                f"{type(fn).__name__}: trying to backward through the graph a second time; "
                "its saved arrays were freed after the first backward. Pass "
                "retain_graph=True to the first backward to keep them.")
        args, out = tracer.forwards[fn]
        refs = [args[i] for i in fn.save_inputs]
        if fn.save_output:
            refs.append((prog.slots[out].name, [out]))
        in_grads = fn.backward(fn.device.ops, g, *saved)
        targets: list[int | None] = []
        for k, gi in enumerate(in_grads):
            keep = k < len(fn.edges) and fn.needs_input_grad[k] and gi is not None
            targets.append(prog.new_slot(gi, "g") if keep else None)
        call = ", ".join([prog.const(fn.device.ops, "ops"), prog.slots[gslot].name]
                         + [e for e, _ in refs])
        kept = [None if t is None else gi for gi, t in zip(in_grads, targets)]
        lowered = lower_backward(fn, g, saved, kept)
        if lowered is not None:
            lowered.operands = [prog.slots[gslot].name] + [e for e, _ in refs]
        prog.add("backward", type(fn).__name__, f"{prog.const(fn.backward, 'bwd')}({call})",
                 [gslot] + [s for _, u in refs for s in u], targets, unpack=True,
                 lowered=lowered)
        for edge, gi, slot in zip(fn.edges, in_grads, targets):
            if slot is None:
                continue
            if edge.__class__ is not Tensor:  # a Function
                if edge in grads:
                    acc, aslot = grads[edge]
                    total = acc + gi
                    tslot = prog.new_slot(total, "g")
                    prog.add("grad-add", "+", f"{prog.slots[aslot].name} + {prog.slots[slot].name}",
                             [aslot, slot], [tslot])
                    grads[edge] = (total, tslot)
                else:
                    grads[edge] = (gi, slot)
                    heapq.heappush(heap, (-edge.seq, edge))
            else:
                write_leaf(edge, gi, slot, handed)
        if saved and not retain_graph:
            fn.saved = FREED
    return written
