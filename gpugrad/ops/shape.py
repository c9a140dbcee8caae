"""Shape, indexing, dtype and device ops: they move data around; gradients move it back."""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from .elementwise import reduce_to, sum_to
from .reductions import normalize_axis


def resolve_shape(op: str, shape, size: int, old) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(int(n) for n in shape)
    if any(n < -1 for n in shape):
        raise ValueError(f"{op}: invalid shape {shape} for a tensor of shape {old}: dims must be "
                         "non-negative, or -1 (once) to infer one")
    if shape.count(-1) > 1:
        raise ValueError(f"{op}: only one dimension can be -1, got {shape}")
    known = math.prod(n for n in shape if n != -1)
    if -1 in shape:
        if known == 0 or size % known:
            raise ValueError(f"{op}: cannot reshape tensor of shape {old} into {shape}")
        shape = tuple(size // known if n == -1 else n for n in shape)
    elif known != size:
        raise ValueError(f"{op}: cannot reshape tensor of shape {old} ({size} elements) "
                         f"into {shape} ({known} elements)")
    return shape


def _cast(g, dtype):
    """A gradient in its input's dtype (inputs of mixed dtypes meet in one promoted output)."""
    return g if g.dtype == dtype else g.astype(dtype)


class Reshape(Function):
    def forward(self, x, shape=()):
        self.shape = x.shape
        return x.reshape(resolve_shape("reshape", shape, x.size, x.shape))

    def backward(self, ops, g): return (g.reshape(self.shape),)


class Transpose(Function):
    def forward(self, x, axes=None):
        if axes is None:
            axes = tuple(reversed(range(x.ndim)))
        elif (len(axes) != x.ndim or any(not -x.ndim <= a < x.ndim for a in axes)
              or sorted(a % x.ndim for a in axes) != list(range(x.ndim))):
            raise ValueError(f"transpose: axes {tuple(axes)} are not a permutation of the "
                             f"{x.ndim} dims of a tensor of shape {x.shape}")
        self.inverse = tuple(int(i) for i in np.argsort([a % x.ndim for a in axes]))
        return x.transpose(axes)

    def backward(self, ops, g): return (g.transpose(self.inverse),)


class BroadcastTo(Function):
    def forward(self, x, shape=()):
        self.shape = x.shape
        try:
            return self.xp.broadcast_to(x, shape)
        except ValueError:
            raise ValueError(f"broadcast_to: cannot broadcast shape {x.shape} to {tuple(shape)}") \
                from None

    def backward(self, ops, g): return (sum_to(g, self.shape),)


class Concatenate(Function):
    def forward(self, *xs, axis=0):
        shapes = [x.shape for x in xs]
        (self.axis,) = normalize_axis("concatenate", axis, xs[0].ndim)
        for s in shapes[1:]:
            if len(s) != len(shapes[0]) or any(
                    a != b for i, (a, b) in enumerate(zip(s, shapes[0])) if i != self.axis):
                raise ValueError(f"concatenate: shapes {shapes} differ outside axis {axis}")
        self.bounds = np.cumsum([0] + [s[self.axis] for s in shapes]).tolist()
        self.dtypes = [x.dtype for x in xs]
        return self.xp.concatenate(xs, axis=self.axis)

    def backward(self, ops, g):
        lead = (slice(None),) * self.axis
        return tuple(_cast(g[lead + (slice(a, b),)], dt)
                     for a, b, dt in zip(self.bounds, self.bounds[1:], self.dtypes))


class Stack(Function):
    def forward(self, *xs, axis=0):
        shapes = {x.shape for x in xs}
        if len(shapes) != 1:
            raise ValueError(f"stack: all tensors must have the same shape, got {sorted(shapes)}")
        (self.axis,) = normalize_axis("stack", axis, xs[0].ndim + 1)
        self.dtypes = [x.dtype for x in xs]
        return self.xp.stack(xs, axis=self.axis)

    def backward(self, ops, g):
        lead = (slice(None),) * self.axis
        return tuple(_cast(g[lead + (i,)], dt) for i, dt in enumerate(self.dtypes))


def _is_advanced(part) -> bool:
    """An index array (integer or bool), as opposed to an int, slice, None or Ellipsis."""
    return hasattr(part, "dtype") and not isinstance(part, np.integer)


class GetItem(Function):
    """``x[index]``; integer-array indices may repeat, so their gradient is a scatter-add."""

    def forward(self, x, index=()):
        self.shape = x.shape
        self.index = index
        parts = index if isinstance(index, tuple) else (index,)
        self.accumulate = any(_is_advanced(p) and p.dtype.kind != "b" for p in parts)
        try:
            return x[index]
        except IndexError as exc:
            raise IndexError(f"getitem: {exc} (tensor shape {x.shape})") from None

    def backward(self, ops, g):
        return (ops.unindex(g, self.index, self.shape, self.accumulate),)


class UnIndex(Function):
    """The transpose of GetItem (its gradient), recorded only under ``create_graph=True``."""

    def forward(self, g, index=(), shape=(), accumulate=False):
        self.index = index
        return self.device.backend.ops.unindex(g, index, shape, accumulate)

    def backward(self, ops, g): return (g[self.index],)


class IndexPut(Function):
    """``x`` with ``[index] = v`` written, as a new array: the recorded form of ``t[index] = v``.
    ``x`` keeps its gradient where it survives; ``v`` gets ``g[index]`` summed to its shape."""

    def forward(self, x, v, index=()):
        out = x.copy()
        out[index] = v
        self.index, self.xmeta = index, (x.shape, x.dtype)
        self.vmeta = (v.shape, v.dtype) if hasattr(v, "shape") else None
        return out

    def backward(self, ops, g):
        need_x, need_v = self.needs_input_grad[:2]
        gx = None
        if need_x:
            kept = self.xp.ones(*self.xmeta)  # 0 where v overwrote x
            kept[self.index] = 0
            gx = g * kept
        gv = None
        if need_v:
            gv = g[self.index]
            extra = len(self.vmeta[0]) - gv.ndim  # v may carry leading 1-dims the slots lack
            gv = reduce_to(gv.reshape((1,) * extra + gv.shape) if extra > 0 else gv, self.vmeta)
        return gx, gv


class Clone(Function):
    """A copy with its own memory; the gradient passes through unchanged."""

    def forward(self, x): return x.copy()
    def backward(self, ops, g): return (g,)


class AsType(Function):
    def forward(self, x, dtype=None):
        self.dtype = x.dtype
        return x.astype(dtype)

    def backward(self, ops, g):
        return (g.astype(self.dtype) if self.dtype.kind in "fc" else None,)


class ToDevice(Function):
    def forward(self, x, target=None):
        self.source = self.device
        self.device = target  # apply() gives the output this device
        return self.source.backend.ops.to_device(x, target)

    def backward(self, ops, g): return (ops.to_device(g, self.source),)
