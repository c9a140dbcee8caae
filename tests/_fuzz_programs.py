"""The random programs of ``test_compile_fuzz.py``: a ``FuzzProgram`` draws, from a seed, a small
training step -- instructions over a pool of values (tensors the step computes, its arguments,
its parameters), a loss, what it returns, its optimizer and how it clears gradients -- with the
initial parameters and each call's data; ``build`` makes the step as a Python function over a
fresh copy of that state, to be run eagerly or compiled."""

from __future__ import annotations

import numpy as np

import gpugrad as gg
import gpugrad.functional as F
from gpugrad import optim

_UNARY = ("neg", "exp", "log", "sqrt", "abs", "sin", "cos", "tanh", "log1p", "expm1", "square",
          "relu", "sigmoid", "pow2", "softmax")  # the last three: neighbours, not lowered
_NEEDS_POSITIVE = ("log", "sqrt", "log1p")
_BOUNDED_INPUT = ("exp", "expm1")
_LAYOUTS = ("C", "F", "strided")  # of the arguments (optimizers take C-ordered parameters)
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
        "/": lambda a, b: a / b, "max": gg.maximum}


def _broadcasts(a: tuple, b: tuple) -> bool:
    return all(x == y or x == 1 or y == 1 for x, y in zip(reversed(a), reversed(b)))


def _out_shape(a: tuple, b: tuple) -> tuple:
    return tuple(np.broadcast_shapes(a, b))


class FuzzProgram:
    """One random training step: instructions over a pool of values, drawn from ``seed``."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.seed = seed
        self.dtype = np.dtype(np.float32 if rng.random() < 0.5 else np.float64)
        self.batch = self._size()
        self.n_in = self._size()
        self.classes = int(rng.integers(2, 5))
        self.x_grad = bool(rng.random() < 0.3)
        self.param_shapes: list[tuple] = []
        self.param_dtypes: list[np.dtype] = []
        self.code: list[tuple] = []
        # the pool: (shape, depends on something with a gradient)
        self.pool: list[tuple[tuple, bool]] = [((self.batch, self.n_in), self.x_grad)]
        self.side_shape: tuple | None = None
        if rng.random() < 0.5:  # a second argument, no gradient, broadcast against the batch
            options = [(self.n_in,), (1, self.n_in), (self.batch, self.n_in), (self.batch, 1), ()]
            self.side_shape = options[int(rng.integers(len(options)))]
            self.pool.append((self.side_shape, False))
            self.code.append(("side",))
        for _ in range(int(rng.integers(2, 12))):
            self._draw_op()
        self._draw_loss()
        self._draw_returns()
        self._draw_training()

    # -- drawing ---------------------------------------------------------------------------------
    def _size(self) -> int:
        """Mostly tiny; sometimes long enough for NumPy's pairwise (blocked) summation."""
        return int(self.rng.integers(1, 6) if self.rng.random() < 0.85
                   else self.rng.integers(9, 19))

    def _param(self, shape: tuple, reuse: float = 0.0) -> int:
        """A new parameter, or (with probability ``reuse``) an existing one of that shape."""
        same = [p for p, s in enumerate(self.param_shapes) if s == tuple(shape)]
        if same and self.rng.random() < reuse:
            return same[int(self.rng.integers(len(same)))]
        self.param_shapes.append(tuple(shape))
        other = np.float64 if self.dtype == np.float32 else np.float32
        self.param_dtypes.append(np.dtype(other if self.rng.random() < 0.08 else self.dtype))
        return len(self.param_shapes) - 1

    def _emit(self, ins: tuple, shape: tuple, grad: bool) -> int:
        self.code.append(ins)
        self.pool.append((tuple(shape), grad))
        return len(self.pool) - 1

    def _pick(self, ok=lambda shape: True) -> int | None:
        found = [i for i, (s, _) in enumerate(self.pool) if ok(s)]
        if not found:
            return None
        # later values more often: longer chains, but every value can be reused
        weights = np.arange(1, len(found) + 1, dtype=float)
        return found[int(self.rng.choice(len(found), p=weights / weights.sum()))]

    def _positive(self, i: int) -> int:
        """A value > 0 made from value ``i`` (usually): square + 1, abs + 0.5, or exp."""
        s, g = self.pool[i]
        kind = self.rng.integers(4)
        if kind == 0:
            return i  # raw: NaN and inf are compared bit for bit too
        if kind == 1:
            j = self._emit(("unary", "square", i), s, g)
            return self._emit(("binop", "+", ("v", j), ("c", 1.0)), s, g)
        if kind == 2:
            j = self._emit(("unary", "abs", i), s, g)
            return self._emit(("binop", "+", ("c", 0.5), ("v", j)), s, g)
        j = self._emit(("unary", "tanh", i), s, g)
        return self._emit(("unary", "exp", j), s, g)

    def _draw_op(self) -> None:
        rng = self.rng
        kind = rng.choice(["linear", "matmul", "unary", "binop", "reduce", "view", "param"],
                          p=[0.18, 0.08, 0.2, 0.22, 0.1, 0.14, 0.08])
        if kind == "linear":
            i = self._pick(lambda s: len(s) >= 1)
            if i is None:
                return
            s = self.pool[i][0]
            out = self._size()
            w = self._param((out, s[-1]), reuse=0.5)  # a layer applied twice: grads add up
            b = self._param((out,), reuse=0.5) if rng.random() < 0.6 else None
            self._emit(("linear", i, w, b), s[:-1] + (out,), True)
        elif kind == "matmul":
            i = self._pick(lambda s: len(s) in (1, 2))
            if i is None:
                return
            s = self.pool[i][0]
            other = self._pick(lambda t: len(t) == 2 and t[0] == s[-1]) \
                if rng.random() < 0.3 else None
            if other is None:
                out = int(rng.integers(1, 5))
                other = self._emit(("param", self._param((s[-1], out))), (s[-1], out), True)
            t = self.pool[other][0]
            grad = self.pool[i][1] or self.pool[other][1]
            self._emit(("matmul", i, other), s[:-1] + t[1:], grad)
        elif kind == "unary":
            name = str(rng.choice(_UNARY))
            i = self._pick()
            if name == "softmax" and not self.pool[i][0]:
                name = "tanh"  # softmax needs an axis
            if name in _NEEDS_POSITIVE:
                i = self._positive(i)
            elif name in _BOUNDED_INPUT and rng.random() < 0.8:
                s, g = self.pool[i]
                i = self._emit(("unary", "tanh" if rng.random() < 0.5 else "sin", i), s, g)
            self._emit(("unary", name, i), *self.pool[i])
        elif kind == "binop":
            op = str(rng.choice(list(_OPS), p=[0.24, 0.24, 0.24, 0.2, 0.08]))
            a = self._pick()
            sa, ga = self.pool[a]
            if rng.random() < 0.3:  # a Python number on one side
                c = float(rng.choice([0.5, 2.0, -1.5, 3.0])) if rng.random() < 0.7 \
                    else int(rng.choice([1, 2, -3]))
                if op == "/" and rng.random() < 0.5:
                    self._emit(("binop", op, ("c", c), ("v", self._positive(a))), sa, ga)
                elif rng.random() < 0.5 and op != "/":
                    self._emit(("binop", op, ("c", c), ("v", a)), sa, ga)
                else:
                    self._emit(("binop", op, ("v", a), ("c", c)), sa, ga)
                return
            b = self._pick(lambda t: t == sa) if rng.random() < 0.5 else None
            if b is None:
                b = self._pick(lambda t: _broadcasts(sa, t))
            if rng.random() < 0.25:  # a broadcast parameter
                shape = tuple(1 if rng.random() < 0.3 else n for n in sa[int(rng.integers(
                    len(sa) + 1)):])
                b = self._emit(("param", self._param(shape)), shape, True)
            if op == "/":
                b = self._positive(b)
            sb, gb = self.pool[b]
            if rng.random() < 0.5:
                a, b, sa, sb = b, a, sb, sa
            self._emit(("binop", op, ("v", a), ("v", b)), _out_shape(sa, sb),
                       self.pool[a][1] or self.pool[b][1])
        elif kind == "reduce":
            i = self._pick()
            s, g = self.pool[i]
            how = str(rng.choice(["sum", "mean", "max"], p=[0.45, 0.45, 0.1]))
            nd = len(s)
            draw = rng.integers(3) if nd else 0
            if draw == 0:
                axis = None
            elif draw == 1:
                axis = int(rng.integers(-nd, nd))
            else:
                k = int(rng.integers(1, nd + 1))
                axis = tuple(int(a) for a in rng.permutation(nd)[:k])
            keep = bool(rng.random() < 0.5)
            axes = range(nd) if axis is None else [axis % nd] if isinstance(axis, int) \
                else [a % nd for a in axis]
            shape = tuple(1 if d in axes else n for d, n in enumerate(s)) if keep \
                else tuple(n for d, n in enumerate(s) if d not in axes)
            self._emit(("reduce", how, i, axis, keep), shape, g)
        elif kind == "view":
            i = self._pick(lambda s: len(s) >= 1)
            if i is None:
                return
            s, g = self.pool[i]
            what = rng.integers(4)
            if what == 0:  # flatten, or split a dim off, or a trailing 1
                n = int(np.prod(s))
                shapes = [(n,), (1, n), s + (1,)]
                if len(s) == 2:
                    shapes.append((s[1], s[0]))
                shape = shapes[int(rng.integers(len(shapes)))]
                self._emit(("reshape", i, shape), shape, g)
            elif what == 1:
                self._emit(("transpose", i), s[::-1], g)
            else:
                axis = int(rng.integers(len(s)))
                n = s[axis]
                start = int(rng.integers(n))
                step = int(rng.choice([1, 2, -1]))
                if step > 0:
                    sl = slice(start, None, step)
                    m = len(range(start, n, step))
                else:
                    sl = slice(start, None, -1)
                    m = start + 1
                if what == 3 and rng.random() < 0.5:  # an int index drops the axis
                    index = (slice(None),) * axis + (start,)
                    shape = s[:axis] + s[axis + 1:]
                else:
                    index = (slice(None),) * axis + (sl,)
                    shape = s[:axis] + (m,) + s[axis + 1:]
                self._emit(("index", i, index), shape, g)
        else:  # a parameter in the pool itself (a value used by several ops, or returned)
            shapes = [s for s, _ in self.pool if len(s) <= 2]
            shape = shapes[int(rng.integers(len(shapes)))]
            self._emit(("param", self._param(shape)), shape, True)

    def _draw_loss(self) -> None:
        rng = self.rng
        self.ce = None
        terms = []
        if rng.random() < 0.7:
            i = self._pick(lambda s: len(s) == 2 and s[0] == self.batch)
            s = self.pool[i][0]
            if s[1] != self.classes or not self.pool[i][1] or rng.random() < 0.5:
                w = self._param((self.classes, s[1]))
                b = self._param((self.classes,)) if rng.random() < 0.7 else None
                i = self._emit(("linear", i, w, b), (self.batch, self.classes), True)
            reduction = str(rng.choice(["mean", "sum", "none"]))
            ignore = int(rng.choice([-100, -1, 0, self.classes - 1]))
            self.ce = (reduction, ignore)
            j = self._emit(("ce", i, reduction, ignore),
                           (self.batch,) if reduction == "none" else (), True)
            if reduction == "none":
                j = self._emit(("reduce", str(rng.choice(["sum", "mean"])), j, None, False), (),
                               True)
            terms.append(j)
        grads = [i for i, (_, g) in enumerate(self.pool) if g]
        read = {i for ins in self.code for i in _reads(ins)}
        sinks = [i for i in grads if i not in read and i not in terms]  # backward reaches most
        for _ in range(int(rng.integers(0 if terms else 1, 4))):
            if sinks and rng.random() < 0.7:
                i = sinks.pop(int(rng.integers(len(sinks))))
            else:
                i = grads[int(rng.integers(len(grads)))] if grads and rng.random() < 0.8 \
                    else self._pick()
            j = self._emit(("reduce", str(rng.choice(["sum", "mean"])), i, None, False), (),
                           self.pool[i][1])
            if rng.random() < 0.5:
                j = self._emit(("binop", "*", ("c", 0.25), ("v", j)), (), self.pool[j][1])
            terms.append(j)
        if not any(self.pool[t][1] for t in terms) or not self.param_shapes:
            # backward needs a graph, the optimizer a parameter
            w = self._param((1, self.n_in))
            j = self._emit(("linear", 0, w, None), (self.batch, 1), True)
            terms.append(self._emit(("reduce", "mean", j, None, False), (), True))
        loss = terms[0]
        for t in terms[1:]:
            loss = self._emit(("binop", "+", ("v", loss), ("v", t)), (), True)
        self.loss = loss
        # sometimes a first backward of one term, keeping the graph for the whole loss's
        self.first_backward = terms[0] if len(terms) > 1 and self.pool[terms[0]][1] \
            and rng.random() < 0.2 else None

    def _draw_returns(self) -> None:
        rng = self.rng
        n = len(self.pool)
        self.returns = [int(i) for i in rng.choice(n, size=min(n, int(rng.integers(0, 4))),
                                                   replace=False)]
        self.grad_returns = [int(p) for p in range(len(self.param_shapes))
                             if rng.random() < 0.2]

    def _draw_training(self) -> None:
        rng = self.rng
        self.optimizer = str(rng.choice(["sgd", "sgd-momentum", "sgd-nesterov", "adam"]))
        self.zero = str(rng.choice(["before", "after-forward", "never", "assign-none", "end"],
                                   p=[0.35, 0.35, 0.1, 0.1, 0.1]))
        # after the update: some instructions run again (reading the updated parameters)
        again = [k for k, ins in enumerate(self.code) if ins[0] not in ("ce", "side")]
        self.after_step = [again[int(k)] for k in rng.integers(len(again), size=int(
            rng.integers(1, 3)))] if again and rng.random() < 0.2 else []
        self.set_to_none = bool(rng.random() < 0.7)
        self.calls = int(rng.integers(3, 6))
        # after some calls, a forward-only call of the same ops (another compiled function)
        self.evals = [str(rng.choice(["", "no_grad", "grad"], p=[0.75, 0.15, 0.1]))
                      for _ in range(self.calls)]
        self.hold = float(rng.choice([0.0, 0.3, 0.8]))
        self.init = [rng.uniform(-1, 1, s).astype(dt)
                     for s, dt in zip(self.param_shapes, self.param_dtypes)]
        # between calls: a new learning rate, or SGD gaining or losing momentum (read per call)
        self.hyper = [(float(rng.choice([0.01, 0.1])) if rng.random() < 0.15 else None,
                       rng.random() < 0.1 and self.optimizer in ("sgd", "sgd-momentum"))
                      for _ in range(self.calls)]
        self.data = []
        for _ in range(self.calls):
            x = rng.uniform(-2, 2, (self.batch, self.n_in)).astype(self.dtype)
            side = None if self.side_shape is None else \
                rng.uniform(-2, 2, self.side_shape).astype(self.dtype)
            labels = rng.integers(0, self.classes, self.batch)
            if self.ce is not None:
                ignore = self.ce[1]
                r = rng.random()
                if r < 0.15:
                    labels[int(rng.integers(self.batch))] = ignore
                elif r < 0.25:
                    bad = [self.classes, self.classes + 3, -2] + ([-1] if ignore != -1 else [])
                    labels[int(rng.integers(self.batch))] = bad[int(rng.integers(len(bad)))]
            layouts = [str(rng.choice(_LAYOUTS, p=[0.7, 0.15, 0.15])) for _ in range(2)]
            self.data.append((x, side, labels, layouts))

    # -- running ---------------------------------------------------------------------------------
    def build(self, device: str):
        """(step function, params, optimizer) over a fresh copy of the initial state."""
        params = [gg.tensor(a.copy(), device=device, requires_grad=True) for a in self.init]
        if self.optimizer == "adam":
            opt = optim.Adam(params, lr=1e-2)
        else:
            momentum = 0.0 if self.optimizer == "sgd" else 0.9
            opt = optim.SGD(params, lr=0.05, momentum=momentum,
                            nesterov=self.optimizer == "sgd-nesterov")
        code, returns, grad_returns = self.code, self.returns, self.grad_returns
        zero, set_to_none, loss_at = self.zero, self.set_to_none, self.loss
        first, after_step = self.first_backward, self.after_step

        def forward(x, side, labels):
            vals = [x]
            for ins in code:
                vals.append(_execute(ins, vals, params, side, labels))
            return vals

        def evaluate(x, side, labels):
            vals = forward(x, side, labels)
            return tuple(vals[i] for i in returns)

        def step(x, side, labels):
            if zero == "before":
                opt.zero_grad(set_to_none)
            elif zero == "assign-none":
                for p in params:
                    p.grad = None
            vals = forward(x, side, labels)
            if zero == "after-forward":
                opt.zero_grad(set_to_none)
            if first is not None:
                vals[first].backward(retain_graph=True)
            vals[loss_at].backward()
            opt.step()
            if zero == "end":
                opt.zero_grad(set_to_none)
            late = tuple(_execute(code[k], vals, params, side, labels) for k in after_step)
            return (tuple(vals[i] for i in returns) + late,
                    tuple(params[p].grad for p in grad_returns))

        return step, evaluate, params, opt

    def arguments(self, call: int, device: str):
        x, side, labels, layouts = self.data[call]
        if device != "cpu" and self.ce is not None:
            # a GPU raises for an out-of-range label at a later host read (a deferred check,
            # tests/test_deferred_checks.py), after the step ran: here only the CPU's at once
            labels = np.where((labels == self.ce[1]) | ((labels >= 0) & (labels < self.classes)),
                              labels, 0)
        xt = _laid_out(x, layouts[0], device)
        return (xt.requires_grad_() if self.x_grad else xt,
                None if side is None else _laid_out(side, layouts[1], device),
                gg.tensor(labels.copy(), device=device))


def _laid_out(a: np.ndarray, how: str, device: str):
    """A new tensor of ``a``'s values in C order, Fortran order, or as a strided view."""
    if how == "F":
        a = np.asfortranarray(a)
    elif how == "strided" and a.ndim:
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        wide[..., ::2] = a
        a = wide[..., ::2]
    else:
        a = a.copy()
    return gg.from_numpy(a) if device == "cpu" else gg.tensor(a, device=device)


def _reads(ins: tuple) -> list[int]:
    """The pool values an instruction reads."""
    op = ins[0]
    if op in ("side", "param"):
        return []
    if op == "binop":
        return [v for kind, v in ins[2:] if kind == "v"]
    if op == "matmul":
        return [ins[1], ins[2]]
    return [ins[2] if op in ("unary", "reduce") else ins[1]]


def _execute(ins: tuple, vals: list, params: list, side, labels):
    op = ins[0]
    if op == "side":
        return side
    if op == "param":
        return params[ins[1]]
    if op == "linear":
        _, i, w, b = ins
        return F.linear(vals[i], params[w], None if b is None else params[b])
    if op == "matmul":
        return vals[ins[1]] @ vals[ins[2]]
    if op == "unary":
        x = vals[ins[2]]
        if ins[1] == "neg":
            return -x
        if ins[1] == "pow2":
            return x ** 2
        if ins[1] == "softmax":
            return F.softmax(x, axis=-1)
        return F.relu(x) if ins[1] == "relu" else getattr(gg, ins[1])(x)
    if op == "binop":
        a, b = ((vals[v] if kind == "v" else v) for kind, v in ins[2:])
        return _OPS[ins[1]](a, b)
    if op == "reduce":
        _, how, i, axis, keep = ins
        return getattr(vals[i], how)(axis=axis, keepdims=keep)
    if op == "reshape":
        return vals[ins[1]].reshape(ins[2])
    if op == "transpose":
        return vals[ins[1]].T
    if op == "index":
        return vals[ins[1]][ins[2]]
    if op == "ce":
        _, i, reduction, ignore = ins
        return F.cross_entropy(vals[i], labels, reduction=reduction, ignore_index=ignore)
    raise AssertionError(op)
