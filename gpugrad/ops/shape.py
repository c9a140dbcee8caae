"""Shape, dtype and device ops: reshape, transpose, broadcast, concatenate/stack, flatten, flip,
tile, repeat, pad, clone, astype, to_device. They move data around; gradients move it back (sums
where data was copied, a scatter-add where indices may repeat).
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..tensor import Tensor, as_dtype, nested_to_host
from ._coerce import as_tensor, tensor_list, untracked_result
from ._rules import axes_of, axis_of, cast_to, normalize_axis, sum_to


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
        return tuple(cast_to(g[lead + (slice(a, b),)], dt)
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
        return tuple(cast_to(g[lead + (i,)], dt) for i, dt in enumerate(self.dtypes))


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
        return target.put(x)

    def backward(self, ops, g): return (ops.to_device(g, self.source),)


class Flip(Function):
    """Reverse the order along ``axes``; the gradient is flipped back."""

    def forward(self, x, axes=()):
        self.axes = axes
        return self.xp.flip(x, axes).copy()  # a copy, like torch.flip (no aliasing view)

    def backward(self, ops, g): return (ops.flip(g, self.axes),)


class Tile(Function):
    """``np.tile``; each output axis of length r·n is (r copies, n), so the gradient is ``g``
    reshaped to (r0, n0, r1, n1, ...) and summed over the copies."""

    def forward(self, x, reps=()):
        nd = max(len(reps), x.ndim)
        reps = (1,) * (nd - len(reps)) + reps
        shape = (1,) * (nd - x.ndim) + x.shape
        self.shape = x.shape
        self.split = tuple(v for r, n in zip(reps, shape) for v in (r, n))
        self.copies = tuple(range(0, 2 * nd, 2))
        return self.xp.tile(x, reps)

    def backward(self, ops, g):
        return (g.reshape(self.split).sum(axis=self.copies).reshape(self.shape),)


class Repeat(Function):
    """``np.repeat`` along one axis. The gradient sums each element's copies: a reshape and sum
    for a single count, a scatter-add (``backend.scatter_add``) for per-element counts."""

    def forward(self, x, repeats=(), axis=0):
        self.shape, self.axis = x.shape, axis
        self.index = None
        if len(repeats) == 1:
            r = repeats[0]
            self.split = x.shape[:axis + 1] + (r,) + x.shape[axis + 1:]
            return self.xp.repeat(x, r, axis=axis)
        source = np.repeat(np.arange(x.shape[axis]), repeats)  # output position -> input index
        self.index = (slice(None),) * axis + (self.device.put(source),)
        return self.xp.repeat(x, list(repeats), axis=axis)

    def backward(self, ops, g):
        if self.index is None:
            return (g.reshape(self.split).sum(axis=self.axis + 1),)
        return (ops.unindex(g, self.index, self.shape, True),)


class Pad(Function):
    """Constant padding; the gradient is the slice of ``g`` where ``x`` sits."""

    def forward(self, x, pairs=(), value=0):
        self.inner = tuple(slice(b, b + n) for (b, _), n in zip(pairs, x.shape))
        if x.ndim == 0:  # NumPy: a 0-d array has no axis to pad and comes back unchanged
            return x.copy()
        return self.xp.pad(x, pairs, mode="constant", constant_values=value)

    def backward(self, ops, g): return (g[self.inner],)


# -- public wrappers -------------------------------------------------------------------------------
def reshape(x, *shape) -> Tensor:
    return Reshape.apply(as_tensor(x), shape=shape)


def transpose(x, *axes) -> Tensor:
    """Permute dims (NumPy semantics); no axes reverses them. See also ``swapaxes``."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return Transpose.apply(as_tensor(x), axes=axes or None)


permute = transpose


def swapaxes(x, axis1: int, axis2: int) -> Tensor:
    x = as_tensor(x)
    axes = list(range(x.ndim))
    a, b = (normalize_axis("swapaxes", ax, x.ndim)[0] for ax in (axis1, axis2))
    axes[a], axes[b] = axes[b], axes[a]
    return Transpose.apply(x, axes=tuple(axes))


def squeeze(x, axis=None) -> Tensor:
    x = as_tensor(x)
    axes = normalize_axis("squeeze", axis, x.ndim)
    if axes is None:
        axes = tuple(i for i, n in enumerate(x.shape) if n == 1)
    for a in axes:
        if x.shape[a] != 1:
            raise ValueError(f"squeeze: axis {a} of shape {x.shape} has size {x.shape[a]}, not 1")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def unsqueeze(x, axis) -> Tensor:
    """Insert a 1 at ``axis`` (an int, or a tuple of them like NumPy's ``expand_dims``), counted
    in the result's dims."""
    x = as_tensor(x)
    n = 1 if isinstance(axis, (int, np.integer)) else len(axis) \
        if isinstance(axis, (tuple, list)) else 1  # (a bad type is reported by normalize_axis)
    axes = normalize_axis("unsqueeze", axis, x.ndim + n)
    dims = iter(x.shape)
    return reshape(x, tuple(1 if i in axes else next(dims) for i in range(x.ndim + n)))


expand_dims = unsqueeze


def broadcast_to(x, shape) -> Tensor:
    return BroadcastTo.apply(as_tensor(x), shape=tuple(shape))


def concatenate(tensors, axis: int = 0) -> Tensor:
    return Concatenate.apply(*tensor_list("concatenate", tensors), axis=axis)


concat = cat = concatenate


def stack(tensors, axis: int = 0) -> Tensor:
    return Stack.apply(*tensor_list("stack", tensors), axis=axis)


def clone(x) -> Tensor:
    """A differentiable copy that owns its memory (``torch.clone``)."""
    return Clone.apply(as_tensor(x))


def astype(x, dtype) -> Tensor:
    x = as_tensor(x)
    dtype = as_dtype(dtype, "astype")
    if dtype == x.dtype:
        return x
    if dtype.kind not in "fc":  # integer/bool results carry no gradient (like comparisons)
        return untracked_result(x.device, _cast, x, dtype)
    return AsType.apply(x, dtype=dtype)


def _cast(a, dtype):
    return a.astype(dtype)


def to_device(x, device) -> Tensor:
    return ToDevice.apply(as_tensor(x), target=device)


def nonnegative_counts(op: str, what: str, values, shape) -> np.ndarray:
    """Non-negative ints (one, or any nesting of sequences) as a host int64 array; Tensors and
    GPU arrays are read on the host."""
    try:
        host = np.asarray(nested_to_host(values))
    except ValueError:  # ragged nesting
        raise TypeError(f"{op}: {what} must be ints or equal-length sequences of ints, got "
                        f"{values!r} (tensor shape {shape})") from None
    if host.size == 0:
        host = host.astype(np.int64)
    if host.dtype.kind not in "iu":
        raise TypeError(f"{op}: {what} must be ints, got {values!r}")
    if (host < 0).any():
        raise ValueError(f"{op}: {what} must be >= 0, got {values!r} (tensor shape {shape})")
    return host.astype(np.int64)


def nonnegative_ints(op: str, what: str, values, shape) -> tuple[int, ...]:
    return tuple(int(v) for v in nonnegative_counts(op, what, values, shape).reshape(-1))


def flatten(x, start_axis: int = 0, end_axis: int = -1) -> Tensor:
    """Merge axes ``start_axis..end_axis`` (inclusive) into one, like ``torch.flatten``."""
    x = as_tensor(x)
    s = axis_of("flatten", start_axis, x.shape, "start_axis", scalar_axis=True)
    e = axis_of("flatten", end_axis, x.shape, "end_axis", scalar_axis=True)
    if x.ndim == 0:  # torch: a 0-d tensor (dims 0 and -1) flattens to shape (1,)
        return reshape(x, (1,))
    if s > e:
        raise ValueError(f"flatten: start_axis {start_axis} comes after end_axis {end_axis} "
                         f"(tensor shape {x.shape})")
    return reshape(x, x.shape[:s] + (math.prod(x.shape[s:e + 1]),) + x.shape[e + 1:])


def flip(x, axis=None) -> Tensor:
    """Reverse ``x`` along ``axis`` (an int, a tuple, or None for every axis)."""
    x = as_tensor(x)
    axes = axes_of("flip", axis, x.shape)
    return Flip.apply(x, axes=tuple(range(x.ndim)) if axes is None else axes)


def tile(x, reps) -> Tensor:
    """NumPy's ``tile``: repeat the whole tensor ``reps`` times along each axis (``reps`` shorter
    than ``x.ndim`` is padded with leading 1s, longer prepends axes to ``x``)."""
    x = as_tensor(x)
    return Tile.apply(x, reps=nonnegative_ints("tile", "reps", reps, x.shape))


def repeat(x, repeats, axis=None) -> Tensor:
    """NumPy's ``repeat`` (``torch.repeat_interleave``): each element ``repeats`` times along
    ``axis`` (the flattened tensor when None); ``repeats`` is an int or one count per element.
    Not ``torch.Tensor.repeat``, which is ``tile``."""
    x = as_tensor(x)
    if axis is None:
        x, axis = reshape(x, -1), 0
    a = axis_of("repeat", axis, x.shape)
    counts = nonnegative_ints("repeat", "repeats", repeats, x.shape)
    if len(counts) != 1 and len(counts) != x.shape[a]:
        raise ValueError(f"repeat: {len(counts)} repeat counts for axis {axis} of size "
                         f"{x.shape[a]} (tensor shape {x.shape})")
    return Repeat.apply(x, repeats=counts, axis=a)


def pad(x, pad_width, mode: str = "constant", constant_values=0) -> Tensor:
    """NumPy's ``pad`` in ``"constant"`` mode: ``pad_width`` is an int, a ``(before, after)``
    pair, or one pair per axis. (``torch.nn.functional.pad`` lists pairs from the last axis.)"""
    x = as_tensor(x)
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is supported, got {mode!r}")
    widths = nonnegative_counts("pad", "pad widths", pad_width, x.shape)
    try:
        pairs = np.broadcast_to(widths, (x.ndim, 2))
    except ValueError:
        raise ValueError(f"pad: pad_width {pad_width!r} does not fit a tensor of shape "
                         f"{x.shape} (give an int, a (before, after) pair or one pair per "
                         f"axis)") from None
    if isinstance(constant_values, Tensor) or np.ndim(constant_values):
        raise TypeError(f"pad: constant_values must be a Python number, got "
                        f"{constant_values!r}")
    return Pad.apply(x, pairs=tuple(tuple(int(v) for v in p) for p in pairs),
                     value=constant_values)


repeat_interleave = repeat  # torch's name for NumPy's repeat (torch's Tensor.repeat is tile)
