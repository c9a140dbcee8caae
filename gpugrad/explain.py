"""Seeing the tape: ``explain(t)`` (the chain-rule table a textbook draws) and ``to_dot(t)``.

``explain`` replays the recorded graph on fresh Function objects -- values forward, then local
derivatives and upstream gradients backward -- so it works whether or not ``backward()`` has run
and never frees or changes the real graph. The replay starts from the inputs' current values: an
input changed in place after the forward pass shows (and propagates) its new value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .autograd import Function
from .tensor import Tensor


@dataclass
class Row:
    name: str
    op: str
    value: object
    local: dict[str, object] = field(default_factory=dict)  # input name -> d(this)/d(input)
    upstream: object = None  # d(output)/d(this)


@dataclass
class Explanation:
    """The table behind a tensor: one row per node, inputs first."""

    output: str
    rows: list[Row]

    def __str__(self) -> str:
        header = ("node", "op", "value", "local derivative(s)", f"upstream ∂{self.output}/∂node")
        body = []
        for r in self.rows:
            local = ", ".join(f"∂{r.name}/∂{k} = {_fmt(v)}" for k, v in r.local.items()) or "—"
            body.append((r.name, r.op, _fmt(r.value), local, _fmt(r.upstream)))
        widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
        line = "-+-".join("-" * w for w in widths)

        def fmt(cells):
            return " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

        return "\n".join([fmt(header), line] + [fmt(b) for b in body])

    __repr__ = __str__


def _fmt(v) -> str:
    if v is None:
        return "—"
    a = np.asarray(v)
    if a.size == 1:
        return f"{a.item() + 0:.6g}"  # + 0 turns -0.0 into 0.0
    return np.array2string(a, precision=4, threshold=6, separator=", ").replace("\n", "")


def _nodes(t: Tensor) -> tuple[list[Function], list[Tensor]]:
    """Every Function behind ``t`` (in recording order) and every leaf tensor they read."""
    fns, leaves, seen = [], [], set()
    stack = [t._ctx] if t._ctx is not None else []
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        fns.append(fn)
        for edge in fn.edges:
            if isinstance(edge, Function):
                stack.append(edge)
            elif edge.__class__ is Tensor and all(edge is not x for x in leaves):
                leaves.append(edge)
    return sorted(fns, key=lambda f: f.seq), leaves


def _host(device, array):
    return np.asarray(device.backend.to_host(array))


def explain(t: Tensor) -> Explanation:
    """The tape behind ``t`` as a table: name, op, value, local derivative(s), upstream gradient.

    Given a ``gg.compile``'d function instead, its static program (the latest one traced)."""
    if t.__class__ is not Tensor and hasattr(t, "programs"):  # gg.compile: the static side
        if t.program is None:
            raise ValueError("explain: this gg.compile'd function has no program yet; call it "
                             "once (the first call traces it)")
        return t.program
    if t._ctx is None:
        return Explanation(t.name or "t", [Row(t.name or "t", "input", _host(t.device, t.data),
                                               upstream=1.0)])
    fns, leaves = _nodes(t)
    names: dict[int, str] = {}
    for i, leaf in enumerate(leaves):
        names[id(leaf)] = leaf.name or f"x{i}"
    for i, fn in enumerate(fns):
        names[id(fn)] = fn.name or f"v{i}"
    if t.name:
        names[id(t._ctx)] = t.name

    def value_of(edge):
        if isinstance(edge, Function):
            return values[id(edge)]
        return edge.data if edge.__class__ is Tensor else edge

    def label(edge):
        return names[id(edge)] if isinstance(edge, (Function, Tensor)) else repr(edge)

    # Forward replay on fresh nodes, keeping what each backward needs.
    values, replay = {}, {}
    for fn in fns:
        fresh = type(fn).__new__(type(fn))
        fresh.device = fn.device
        args = [value_of(e) for e in fn.edges]
        with fn.device.activate():  # as Function.apply does
            out = fresh.forward(*args, **fn.params)
        fresh.edges = fn.edges
        fresh.needs_input_grad = tuple(
            isinstance(e, (Function, Tensor)) and getattr(a, "dtype", None) is not None
            and a.dtype.kind == "f" for e, a in zip(fn.edges, args))
        fresh.saved = [args[i] for i in fn.save_inputs] + ([out] if fn.save_output else [])
        values[id(fn)], replay[id(fn)] = out, fresh

    # Backward replay: local derivatives (vector-Jacobian product with ones) and upstream grads.
    xp = t.device.xp
    with t.device.activate():
        upstream = {id(t._ctx): xp.ones_like(values[id(t._ctx)])}
    local: dict[int, dict[str, object]] = {}
    leaf_up: dict[int, object] = {}
    for fn in reversed(fns):
        fresh, out = replay[id(fn)], values[id(fn)]
        ops = fn.device.backend.ops
        with fn.device.activate():  # as the backward engine does
            ones = fresh.backward(ops, xp.ones_like(out), *fresh.saved)
            derivs: dict[str, object] = {}
            for e, d in zip(fn.edges, ones):
                if d is not None:  # an input used twice (a*a) gets both parts, summed
                    name = label(e)
                    derivs[name] = _host(fn.device, d) + derivs.get(name, 0)
            local[id(fn)] = derivs
            g = upstream.get(id(fn))
            if g is None:
                continue
            for edge, gi in zip(fn.edges, fresh.backward(ops, g, *fresh.saved)):
                if gi is None:
                    continue
                key = id(edge)
                target = upstream if isinstance(edge, Function) else leaf_up
                target[key] = gi if key not in target else target[key] + gi

    rows = [Row(names[id(leaf)], "input" if leaf.requires_grad else "constant",
                _host(leaf.device, leaf.data),
                upstream=_host(leaf.device, leaf_up[id(leaf)]) if id(leaf) in leaf_up else None)
            for leaf in leaves]
    for fn in fns:
        op = f"{type(fn).__name__.lower()}({', '.join(label(e) for e in fn.edges)})"
        g = upstream.get(id(fn))
        rows.append(Row(names[id(fn)], op, _host(fn.device, values[id(fn)]), local[id(fn)],
                        None if g is None else _host(fn.device, g)))
    return Explanation(names[id(t._ctx)], rows)


def to_dot(t: Tensor) -> str:
    """Graphviz DOT text of the graph behind ``t`` (inputs as boxes, ops as ellipses)."""
    lines = ["digraph gpugrad {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    if t._ctx is None:
        lines.append(f'  n0 [shape=box, label="{t.name or "t"}"];')
        return "\n".join(lines + ["}"])
    fns, leaves = _nodes(t)
    ids: dict[int, str] = {}
    for i, leaf in enumerate(leaves):
        ids[id(leaf)] = f"x{i}"
        kind = "input" if leaf.requires_grad else "constant"
        lines.append(f'  x{i} [shape=box, label="{leaf.name or f"x{i}"}\\n{kind} '
                     f'{tuple(leaf.shape)}"];')
    for i, fn in enumerate(fns):
        ids[id(fn)] = f"v{i}"
        name = t.name if fn is t._ctx and t.name else (fn.name or f"v{i}")
        lines.append(f'  v{i} [label="{name}\\n{type(fn).__name__.lower()}"];')
    for fn in fns:
        for j, edge in enumerate(fn.edges):
            if isinstance(edge, (Function, Tensor)):
                lines.append(f"  {ids[id(edge)]} -> {ids[id(fn)]};")
            else:
                const = f"c{ids[id(fn)]}_{j}"
                lines.append(f'  {const} [shape=plaintext, label="{edge!r}"];')
                lines.append(f"  {const} -> {ids[id(fn)]};")
    return "\n".join(lines + ["}"])


def render_dot(dot: str, path: str, format: str = "svg") -> str:  # noqa: A002
    """Render DOT text to ``path`` with the optional ``graphviz`` package and ``dot`` binary."""
    try:
        import graphviz
    except ImportError:
        raise ImportError("render_dot needs the graphviz package: pip install 'gpugrad[graphviz]' "
                          "(and the Graphviz 'dot' program)") from None
    return graphviz.Source(dot).render(outfile=path, format=format, cleanup=True)
