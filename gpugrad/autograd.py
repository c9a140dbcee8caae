"""The reverse-mode tape: ``Function``, and the iterative backward walk.

Every differentiable op is a ``Function`` subclass with ``forward`` (arrays in, array out, through
the device's array module ``self.xp``) and ``backward`` (the vector-Jacobian product). Applying a
Function while grad mode is on records it: its *edges* (for each input, the Function that made it,
or the leaf tensor itself, or the Python scalar), what it saved for backward (only that) and a
sequence number. ``backward()`` walks the recorded nodes reachable from the output in decreasing
sequence order with an explicit list (no recursion), so depth is limited only by memory.

Derivative rules are written once and run in two modes:
- array mode (default): ``g`` and the saved values are raw arrays and ``ops`` is the device's
  ``ArrayOps`` -- no Tensor objects are created, which keeps the tape cheap;
- graph mode (``create_graph=True``): ``g`` and the saved values are Tensors linked into the graph
  and ``ops`` is ``gpugrad.ops`` -- the backward is itself recorded, so it can be differentiated.

While ``gg.compile`` traces a function, a thread-local tracer (``_tracing.tracer``, kept in
``tensor.py`` so that tensors made or read on the host report to it too) is told of every
``Function.apply``, every ``backward()`` and every update made through ``traced_call``; it is
None otherwise, and while no thread traces each hook costs one plain attribute read (the
``_tracers.count`` gate, see ``tensor.py``; then the thread-local, see ``gpugrad/compile``).
Nothing here imports the compiler: it installs itself as the tracer.

Grad mode (``grad_mode.py``) and the leaf-gradient hook registries (``grad_hooks.py``) live in
modules of their own; this module re-exports them, so ``gpugrad.autograd`` names the whole engine.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from .backend import DeviceError, fp_errors
from .grad_hooks import (  # noqa: F401 - RemovableHandle and register_* are re-exported
    RemovableHandle,
    _backward_done,
    _grad_hooks,
    fire_grad_hooks,
    register_backward_done_callback,
    register_post_accumulate_grad_hook,
)
from .grad_mode import (  # noqa: F401 - enable_grad, is_grad_enabled, no_grad are re-exported
    _grad_mode,
    enable_grad,
    is_grad_enabled,
    no_grad,
)
from .tensor import Tensor, _tracers, _tracing

# Bound once: the tape's hot paths call them on every op, and a global read is cheaper than a
# global read plus an attribute lookup.
_next_seq = itertools.count().__next__
_new_tensor = object.__new__
_fp_quiet, _fp_restore = fp_errors.quiet, fp_errors.restore


def traced_call(func, *args: Any) -> Any:
    """``func(*args)``; under ``gg.compile`` the call is also recorded as one step of the program,
    so that the replay repeats it. For updates made outside Functions (optimizer steps, running
    statistics, gradient clipping): they read and write tensors that outlive the step."""
    if not _tracers.count or _tracing.tracer is None:
        return func(*args)
    return _tracing.tracer.call(func, args)


def host_constant(array: Any) -> Any:
    """Mark ``array`` (built from host data, e.g. an index list) as a constant for an active
    ``gg.compile`` trace, which otherwise refuses arrays it did not see computed."""
    if _tracers.count and _tracing.tracer is not None:
        _tracing.tracer.constant(array)
    return array


def untraceable(what: str, why: str) -> None:
    """Tell an active ``gg.compile`` trace that ``what`` cannot be replayed (it raises, or
    falls back to eager execution)."""
    if _tracers.count and _tracing.tracer is not None:
        _tracing.tracer.fail(what, why)


class _Freed:
    """Marks a node whose saved arrays were released after a backward pass."""


FREED = _Freed()


class Function:
    """One differentiable op. Subclasses define ``forward`` and ``backward``.

    Class attributes declare what backward receives after ``g``: ``save_inputs`` (input positions)
    then, if ``save_output``, the output. Anything else backward needs (shapes, axes, masks) is set
    on ``self`` in ``forward`` and treated as a constant.
    """

    save_inputs: tuple[int, ...] = ()
    save_output: bool = False

    # set by apply(): device; when recorded also edges, needs_input_grad, saved, seq, params
    name: str | None = None
    source = None  # the inputs' device when it is not ``device`` (set by ToDevice's forward)
    params: dict = {}  # keyword arguments of forward, kept for gg.explain's replay
    _saves_prefix = False
    # params drawn anew on each gg.compile replay: name -> function of the traced params (dropout
    # keys come from the host generator on every call, as in eager code)
    replay_params: dict = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._saves_prefix = cls.save_inputs == tuple(range(len(cls.save_inputs)))

    @property
    def xp(self):
        """The array module (numpy or cupy) of this node's device."""
        return self.device.xp

    def forward(self, *arrays: Any, **params: Any) -> Any:
        raise NotImplementedError

    def backward(self, ops: Any, g: Any, *saved: Any) -> tuple[Any, ...]:
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs: Any, **params: Any):
        """Run forward on the inputs' arrays and, in grad mode, record the node."""
        dev = None
        record = False
        arrays = []
        edges = []
        needs = []
        for t in inputs:
            if t.__class__ is Tensor:
                if dev is None:
                    dev = t.device
                elif t.device is not dev:
                    raise DeviceError(
                        f"{cls.__name__.lower()}: tensors are on different devices "
                        f"({dev} and {t.device}); move them with .to(device) first"
                    )
                arrays.append(t.data)
                edges.append(t._ctx or t)
                need = t.requires_grad
                needs.append(need)
                if need:
                    record = True
            else:
                arrays.append(t)
                edges.append(t)
                needs.append(False)
        fn = cls.__new__(cls)
        fn.device = dev
        token = _fp_quiet()  # inf/NaN results are answers, not warnings (as in PyTorch)
        try:
            if dev.type == "cpu":
                out = fn.forward(*arrays, **params)
            else:
                with dev.activate():  # CuPy allocates and launches on the current GPU
                    out = fn.forward(*arrays, **params)
        finally:
            _fp_restore(token)
        if out.__class__ is not np.ndarray and isinstance(out, np.generic):
            out = np.asarray(out)  # NumPy returns scalars from 0-d ufuncs; tensors hold arrays
        result = _new_tensor(Tensor)
        result.data = out
        result.device = fn.device  # forward may move it (ToDevice)
        result._grad = None
        result._name = None
        if record and _grad_mode.enabled:
            fn.edges = edges
            fn.needs_input_grad = needs
            if cls._saves_prefix and len(cls.save_inputs) == len(arrays):
                saved = arrays  # the common case: every input saved, no copy of the list
            else:
                saved = [arrays[i] for i in cls.save_inputs]
            if cls.save_output:
                saved.append(out)
            fn.saved = saved
            if params:
                fn.params = params
            fn.seq = _next_seq()
            result.requires_grad = True
            result._ctx = fn
        else:
            result.requires_grad = False
            result._ctx = None
        if _tracers.count and _tracing.tracer is not None:
            _tracing.tracer.on_apply(fn, inputs, arrays, params, result)
        return result

    # -- used by the engine ----------------------------------------------------------------
    def _saved_as_tensors(self) -> list:
        """The saved values as graph-linked Tensors, for a differentiable (graph-mode) backward."""
        out = []
        positions = list(self.save_inputs) + ([None] if self.save_output else [])
        for pos, value in zip(positions, self.saved):
            if pos is None:
                out.append(Tensor._wrap(value, self.device, True, self))
                continue
            edge = self.edges[pos]
            if edge.__class__ is Tensor:
                if edge.data is not value:  # changed in place since: use what was saved
                    if self.needs_input_grad[pos]:
                        raise RuntimeError(
                            f"backward with create_graph=True: a leaf tensor of shape {edge.shape} "
                            f"saved by {type(self).__name__} was changed in place after the "
                            "forward pass, so its saved value can no longer be linked to it; "
                            "change it after backward (the first-order backward still works)")
                    edge = Tensor._wrap(value, edge.device)  # a constant: no link needed
                out.append(edge)
            elif isinstance(edge, Function):
                out.append(Tensor._wrap(value, edge.device, True, edge))
            else:
                out.append(value)  # a Python scalar
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} #{getattr(self, 'seq', '?')}>"


def _accumulate(a, b):
    return b if a is None else a + b


def run_backward(
    outputs: Sequence[Tensor],
    grad_outputs: Sequence[Any],
    retain_graph: bool,
    create_graph: bool,
    inputs: Sequence[Tensor] | None = None,
) -> list | None:
    """Propagate ``grad_outputs`` from ``outputs`` back through the tape.

    Nodes are taken from a heap, latest recorded first: every consumer of a node was recorded
    after it, so when a node is popped its gradient is complete. Only nodes that receive a
    gradient are ever visited.

    With ``inputs=None`` gradients accumulate into each reachable leaf's ``.grad``; otherwise the
    gradients with respect to ``inputs`` are returned (``None`` where unreachable) and no ``.grad``
    is touched -- that is ``gg.grad``.
    """
    grads: dict[Function, Any] = {}
    heap: list[tuple[int, Function]] = []
    collect = inputs is not None
    hooks = _grad_hooks if _grad_hooks and not collect else None
    if collect:
        leaf_grads: dict[int, Any] = {}
        wanted_leaves = {id(t) for t in inputs if t._ctx is None}
        wanted_nodes = {t._ctx for t in inputs if t._ctx is not None}
        captured: dict[Function, Any] = {}
    for out, g in zip(outputs, grad_outputs):
        fn = out._ctx
        if fn is None:
            if collect and id(out) in wanted_leaves:
                leaf_grads[id(out)] = _accumulate(leaf_grads.get(id(out)), g)
            elif not collect and out.requires_grad:
                out._accumulate_grad(g)
                if hooks is not None:
                    fire_grad_hooks(hooks, out)
        elif fn in grads:
            with out.device.activate():
                grads[fn] = grads[fn] + g
        else:
            grads[fn] = g
            heapq.heappush(heap, (-fn.seq, fn))

    handed: set[int] = set()  # ids of arrays already stored as some leaf's .grad
    active = None  # the device of the node being run: CuPy computes on the current GPU
    gpus = None  # the GPU contexts entered so far (an ExitStack from the first GPU node on)
    prev_mode = _grad_mode.enabled
    _grad_mode.enabled = create_graph
    fp_token = fp_errors.quiet()  # derivative rules too: inf/NaN gradients are no warnings
    try:
        while heap:
            fn = heapq.heappop(heap)[1]
            # A node runs on the device its input gradients belong to: its own, or its source
            # (ToDevice). Enter that GPU's context when it changes; the contexts are left, in
            # order, when the walk ends.
            dev = fn.source or fn.device
            if dev is not active:
                active = dev
                if dev.type != "cpu":
                    if gpus is None:
                        gpus = contextlib.ExitStack()
                    gpus.enter_context(dev.activate())
            g = grads.pop(fn)
            if collect and fn in wanted_nodes:
                captured[fn] = g
            saved = fn.saved
            if saved is FREED:
                raise RuntimeError(
                    f"{type(fn).__name__}: trying to backward through the graph a second time; "
                    "its saved arrays were freed after the first backward. Pass "
                    "retain_graph=True to the first backward to keep them."
                )
            if create_graph:
                in_grads = fn.backward(_graph_ops, g, *fn._saved_as_tensors())
            else:
                in_grads = fn.backward(fn.device.ops, g, *saved)
            for edge, need, gi in zip(fn.edges, fn.needs_input_grad, in_grads):
                if not need or gi is None:
                    continue
                if edge.__class__ is not Tensor:  # a Function (scalars never need grad)
                    if edge in grads:
                        grads[edge] = grads[edge] + gi
                    else:
                        grads[edge] = gi
                        heapq.heappush(heap, (-edge.seq, edge))
                elif not collect:
                    if gi.__class__ is not Tensor:
                        if isinstance(gi, np.generic):  # NumPy's 0-d results are scalars
                            gi = np.array(gi)
                        # A rule may hand one array to several inputs (add returns g, g) or a
                        # view of it; a leaf's .grad must own its memory.
                        if gi.base is not None or id(gi) in handed:
                            gi = gi.copy()
                        handed.add(id(gi))
                        if edge._grad is None and gi.shape == edge.data.shape:
                            # The common first write. Built here, without the .grad setter's and
                            # _wrap's tracer hooks: a gg.compile trace never runs this walk.
                            t = _new_tensor(Tensor)
                            t.data = gi
                            t.device = edge.device
                            t.requires_grad = False
                            t._grad = t._ctx = t._name = None
                            edge._grad = t
                            if hooks is not None:
                                fire_grad_hooks(hooks, edge)
                            continue
                    edge._accumulate_grad(gi)
                    if hooks is not None:
                        fire_grad_hooks(hooks, edge)
                elif id(edge) in wanted_leaves:
                    leaf_grads[id(edge)] = _accumulate(leaf_grads.get(id(edge)), gi)
            if saved and not retain_graph:
                fn.saved = FREED
    finally:
        fp_errors.restore(fp_token)
        _grad_mode.enabled = prev_mode
        if gpus is not None:
            gpus.close()

    if not collect:
        for callback in tuple(_backward_done) if _backward_done else ():
            callback()
        return None
    results = []
    for t in inputs:
        g = leaf_grads.get(id(t)) if t._ctx is None else captured.get(t._ctx)
        if g is not None and g.__class__ is not Tensor:
            g = Tensor._wrap(np.array(g) if isinstance(g, np.generic) else g, t.device)
        results.append(g)
    return results


# The namespace graph-mode (create_graph=True) derivative rules receive: gpugrad.ops, handed over
# by gpugrad.ops.tensor_methods.setup_tensor() so that the engine never imports the layer above.
_graph_ops: Any = None


def set_graph_ops(namespace: Any) -> None:
    """Give the engine the op namespace of graph mode (``gpugrad.ops``; set when gpugrad loads)."""
    global _graph_ops
    _graph_ops = namespace


def grad(
    outputs,
    inputs,
    grad_outputs=None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool = True,
) -> tuple:
    """Gradients of ``outputs`` with respect to ``inputs``, returned as a tuple (like torch)."""
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    for t in inputs:
        if not isinstance(t, Tensor):
            raise TypeError(f"grad: inputs must be Tensors, got {type(t).__name__}")
        if not t.requires_grad:
            raise RuntimeError("grad: one of the inputs does not require grad")
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif isinstance(grad_outputs, Tensor) or hasattr(grad_outputs, "shape"):
        grad_outputs = [grad_outputs]  # one gradient (a tensor or an array), not a list of them
    else:
        grad_outputs = list(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad: got {len(outputs)} outputs but {len(grad_outputs)} "
                         "grad_outputs; give one per output (None for a scalar output)")
    if _tracing.tracer is not None:
        untraceable("gg.grad", "gradients returned as values are not captured; use backward()")
    if retain_graph is None:
        retain_graph = create_graph
    seeds = [_seed_gradient(o, g, create_graph, "grad") for o, g in zip(outputs, grad_outputs)]
    result = run_backward(outputs, seeds, retain_graph, create_graph, inputs=inputs)
    if not allow_unused and any(r is None for r in result):
        raise RuntimeError("grad: one of the inputs was not used to compute the outputs")
    return tuple(result)


def backward(
    tensor: Tensor,
    gradient=None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
) -> None:
    if not tensor.requires_grad:
        raise RuntimeError(
            "backward: the tensor does not require grad and has no grad_fn "
            "(was it computed under no_grad, or from tensors without requires_grad=True?)"
        )
    if retain_graph is None:
        retain_graph = create_graph
    if _tracers.count and _tracing.tracer is not None:  # gg.compile records the walk
        _tracing.tracer.backward(tensor, gradient, retain_graph, create_graph)
        return
    seed = _seed_gradient(tensor, gradient, create_graph, "backward")
    run_backward([tensor], [seed], retain_graph, create_graph)


def _seed_gradient(out: Tensor, gradient, create_graph: bool, op: str):
    """The starting gradient: ones for a scalar output, else the caller's ``gradient``."""
    if gradient is None:
        if out.data.size != 1:
            raise RuntimeError(
                f"{op}: grad can be implicitly created only for scalar outputs, but the output "
                f"has shape {out.shape}; pass gradient= (a tensor of that shape)"
            )
        if out.device.type == "cpu" and out.ndim == 0:
            seed = np.array(1, dtype=out.dtype)  # 5x cheaper than ones_like: the usual loss
        else:
            with out.device.activate():
                seed = out.device.xp.ones(out.shape, dtype=out.dtype)
    else:
        if isinstance(gradient, Tensor):
            if gradient.device is not out.device:
                raise DeviceError(
                    f"{op}: gradient is on {gradient.device} but the output is on {out.device}"
                )
            if gradient.shape != out.shape:
                raise ValueError(f"{op}: gradient has shape {gradient.shape} but the output has "
                                 f"shape {out.shape}")
            if create_graph and gradient.requires_grad:
                # Keep the seed in the graph, so the result can be differentiated with respect
                # to it (the double-VJP way to a Jacobian-vector product).
                ops = _graph_ops
                return ops.clone(gradient if gradient.dtype == out.dtype
                                 else ops.astype(gradient, out.dtype))
            with out.device.activate():  # the caller keeps its tensor; leaves own their grads
                seed = gradient.data.astype(out.dtype, copy=True)
        else:
            seed = out.device.backend.asarray(gradient, dtype=out.dtype)
            if seed is gradient:  # the caller's own array: leaves must own their grads
                seed = seed.copy()
        if seed.shape != out.shape:
            raise ValueError(
                f"{op}: gradient has shape {seed.shape} but the output has shape {out.shape}"
            )
    if create_graph:
        return Tensor._wrap(seed, out.device)
    return seed

