"""More shape and indexing ops: ``flatten``, ``split``/``chunk``, ``flip``, ``tile``, ``repeat``,
``gather``/``take_along_axis`` and constant ``pad``. Each gradient moves ``g`` back where the
forward took the data from (sums where data was copied, a scatter-add where indices may repeat).

Imported at the end of ``gpugrad/ops/__init__.py`` (it uses that module's ops).
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..backend import checks
from ..tensor import Tensor, _is_device_array, _to_host  # GPU arrays: NumPy refuses them
from . import _t, getitem, reshape
from .reductions_extra import axes_of, axis_of


def _counts(op: str, what: str, values, shape) -> np.ndarray:
    """Non-negative ints (one, or any nesting of sequences) as a host int64 array; Tensors and
    GPU arrays are read on the host."""
    try:
        host = np.asarray(_to_host(values))
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


def _ints(op: str, what: str, values, shape) -> tuple[int, ...]:
    return tuple(int(v) for v in _counts(op, what, values, shape).reshape(-1))


# -- flatten, split, chunk (compositions of reshape and getitem) -------------------------------
def flatten(x, start_axis: int = 0, end_axis: int = -1) -> Tensor:
    """Merge axes ``start_axis..end_axis`` (inclusive) into one, like ``torch.flatten``."""
    x = _t(x)
    s = axis_of("flatten", start_axis, x.shape, "start_axis", scalar_axis=True)
    e = axis_of("flatten", end_axis, x.shape, "end_axis", scalar_axis=True)
    if x.ndim == 0:  # torch: a 0-d tensor (dims 0 and -1) flattens to shape (1,)
        return reshape(x, (1,))
    if s > e:
        raise ValueError(f"flatten: start_axis {start_axis} comes after end_axis {end_axis} "
                         f"(tensor shape {x.shape})")
    return reshape(x, x.shape[:s] + (math.prod(x.shape[s:e + 1]),) + x.shape[e + 1:])


def _pieces(x: Tensor, axis: int, sizes) -> tuple[Tensor, ...]:
    lead, out, start = (slice(None),) * axis, [], 0
    for n in sizes:
        out.append(getitem(x, lead + (slice(start, start + n),)))
        start += n
    return tuple(out)


def split(x, split_size_or_sections, axis: int = 0) -> tuple[Tensor, ...]:
    """``torch.split``: an int is the size of each piece (the last may be smaller); a sequence
    gives every piece's size and must sum to the axis' length. Each piece is differentiable."""
    x = _t(x)
    a = axis_of("split", axis, x.shape)
    n = x.shape[a]
    if isinstance(split_size_or_sections, (int, np.integer)) and \
            not isinstance(split_size_or_sections, bool):
        (size,) = _ints("split", "split_size", split_size_or_sections, x.shape)
        if size == 0:
            if n:
                raise ValueError(f"split: split_size must be positive for axis {axis} of size "
                                 f"{n} (tensor shape {x.shape})")
            return (x,)
        sizes = [size] * (n // size) + ([n % size] if n % size else [])
        return _pieces(x, a, sizes or [0])
    sizes = _ints("split", "section sizes", split_size_or_sections, x.shape)
    if sum(sizes) != n:
        raise ValueError(f"split: section sizes {list(sizes)} sum to {sum(sizes)}, but axis "
                         f"{axis} has size {n} (tensor shape {x.shape})")
    return _pieces(x, a, sizes)


def chunk(x, chunks: int, axis: int = 0) -> tuple[Tensor, ...]:
    """``torch.chunk``: pieces of ``ceil(n / chunks)`` along ``axis`` (so possibly fewer than
    ``chunks`` pieces, the last one smaller)."""
    x = _t(x)
    if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)) or chunks < 1:
        raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r} "
                         f"(tensor shape {x.shape})")
    a = axis_of("chunk", axis, x.shape)
    if x.shape[a] == 0:  # torch: ``chunks`` empty pieces
        return _pieces(x, a, [0] * int(chunks))
    return split(x, max(-(-x.shape[a] // int(chunks)), 1), a)


# -- flip, tile, repeat --------------------------------------------------------------------------
class Flip(Function):
    """Reverse the order along ``axes``; the gradient is flipped back."""

    def forward(self, x, axes=()):
        self.axes = axes
        return self.xp.flip(x, axes).copy()  # a copy, like torch.flip (no aliasing view)

    def backward(self, ops, g): return (ops.flip(g, self.axes),)


def flip(x, axis=None) -> Tensor:
    """Reverse ``x`` along ``axis`` (an int, a tuple, or None for every axis)."""
    x = _t(x)
    axes = axes_of("flip", axis, x.shape)
    return Flip.apply(x, axes=tuple(range(x.ndim)) if axes is None else axes)


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


def tile(x, reps) -> Tensor:
    """NumPy's ``tile``: repeat the whole tensor ``reps`` times along each axis (``reps`` shorter
    than ``x.ndim`` is padded with leading 1s, longer prepends axes to ``x``)."""
    x = _t(x)
    return Tile.apply(x, reps=_ints("tile", "reps", reps, x.shape))


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
        self.index = (slice(None),) * axis + (self.device.backend.asarray(source),)
        return self.xp.repeat(x, list(repeats), axis=axis)

    def backward(self, ops, g):
        if self.index is None:
            return (g.reshape(self.split).sum(axis=self.axis + 1),)
        return (ops.unindex(g, self.index, self.shape, True),)


def repeat(x, repeats, axis=None) -> Tensor:
    """NumPy's ``repeat`` (``torch.repeat_interleave``): each element ``repeats`` times along
    ``axis`` (the flattened tensor when None); ``repeats`` is an int or one count per element.
    Not ``torch.Tensor.repeat``, which is ``tile``."""
    x = _t(x)
    if axis is None:
        x, axis = reshape(x, -1), 0
    a = axis_of("repeat", axis, x.shape)
    counts = _ints("repeat", "repeats", repeats, x.shape)
    if len(counts) != 1 and len(counts) != x.shape[a]:
        raise ValueError(f"repeat: {len(counts)} repeat counts for axis {axis} of size "
                         f"{x.shape[a]} (tensor shape {x.shape})")
    return Repeat.apply(x, repeats=counts, axis=a)


# -- gather / take_along_axis ----------------------------------------------------------------------
class Gather(Function):
    """Pick one element along ``axis`` per index position (``torch.gather`` or NumPy's
    ``take_along_axis``). The forward is one advanced index (``index`` along ``axis``, aranges
    elsewhere); the gradient scatter-adds ``g`` back, so repeated indices accumulate."""

    def forward(self, x, index, axis=0, torch_rule=True):
        op = "gather" if torch_rule else "take_along_axis"
        if index.ndim != x.ndim:
            raise ValueError(f"{op}: index has {index.ndim} dims but the tensor has {x.ndim} "
                             f"(index shape {index.shape}, tensor shape {x.shape})")
        for d, (i, n) in enumerate(zip(index.shape, x.shape)):
            ok = i <= n if torch_rule else i == n or i == 1 or n == 1
            if d != axis and not ok:
                rule = "no larger than" if torch_rule else "broadcastable with"
                raise ValueError(f"{op}: index shape {index.shape} must be {rule} tensor shape "
                                 f"{x.shape} outside axis {axis}")
        n = x.shape[axis]
        low = 0 if torch_rule else -n
        # CuPy wraps out-of-range indices, so check them: min and max computed on the device,
        # read at the next host read (a deferred check: no sync here; now on the CPU)
        if index.size:
            shape = x.shape

            def error(f) -> IndexError | None:
                lo, hi = int(f[0]), int(f[1])
                if lo >= low and hi < n:
                    return None
                return IndexError(f"{op}: index {hi if hi >= n else lo} is out of bounds for "
                                  f"axis {axis} with size {n} (tensor shape {shape})")

            checks.require(self.xp.stack([index.min(), index.max()]).astype(np.int64), error)
        parts = []
        for d in range(x.ndim):
            if d == axis:
                parts.append(index)
            else:
                m = index.shape[d] if torch_rule else x.shape[d]
                parts.append(self.xp.arange(m).reshape((1,) * d + (m,) + (1,) * (x.ndim - d - 1)))
        self.index, self.shape = tuple(parts), x.shape
        return x[self.index]

    def backward(self, ops, g):
        return ops.unindex(g, self.index, self.shape, True), None


def _index_tensor(op: str, index, x: Tensor) -> Tensor:
    if index.__class__ is not Tensor and _is_device_array(index):
        index = Tensor(index, device=x.device)  # a CuPy array: no trip through NumPy
    elif index.__class__ is not Tensor:
        try:
            host = np.asarray(index)
        except TypeError:  # GPU arrays nested in a list: NumPy cannot read them
            host = np.asarray(_to_host(index))
        if host.size == 0 and isinstance(index, (list, tuple)):
            host = host.astype(np.int64)  # [] holds no indices (NumPy's rule), not floats
        index = Tensor(host, device=x.device)
    elif index.device is not x.device and index.device.type == "cpu":
        index = index.to(x.device)  # as getitem does; a GPU index for another device is refused
    if index.dtype.kind not in "iu":
        raise TypeError(f"{op}: index must be an integer tensor, got dtype {index.dtype} "
                        f"(index shape {index.shape})")
    return index


def gather(x, axis: int, index) -> Tensor:
    """``torch.gather``: ``out[i][j][k] = x[index[i][j][k]][j][k]`` for ``axis=0``. ``index``
    has x's number of dims and is no larger outside ``axis``; indices lie in [0, n)."""
    x = _t(x)
    a = axis_of("gather", axis, x.shape)
    return Gather.apply(x, _index_tensor("gather", index, x), axis=a, torch_rule=True)


def take_along_axis(x, indices, axis) -> Tensor:
    """NumPy's ``take_along_axis``: like ``gather`` but ``indices`` broadcasts against ``x``
    outside ``axis`` and may be negative (from the end); ``axis=None`` works on the flattened x."""
    x = _t(x)
    if axis is None:
        x, axis = reshape(x, -1), 0
    a = axis_of("take_along_axis", axis, x.shape)
    return Gather.apply(x, _index_tensor("take_along_axis", indices, x), axis=a,
                        torch_rule=False)


# -- pad -------------------------------------------------------------------------------------------
class Pad(Function):
    """Constant padding; the gradient is the slice of ``g`` where ``x`` sits."""

    def forward(self, x, pairs=(), value=0):
        self.inner = tuple(slice(b, b + n) for (b, _), n in zip(pairs, x.shape))
        if x.ndim == 0:  # NumPy: a 0-d array has no axis to pad and comes back unchanged
            return x.copy()
        return self.xp.pad(x, pairs, mode="constant", constant_values=value)

    def backward(self, ops, g): return (g[self.inner],)


def pad(x, pad_width, mode: str = "constant", constant_values=0) -> Tensor:
    """NumPy's ``pad`` in ``"constant"`` mode: ``pad_width`` is an int, a ``(before, after)``
    pair, or one pair per axis. (``torch.nn.functional.pad`` lists pairs from the last axis.)"""
    x = _t(x)
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is supported, got {mode!r}")
    widths = _counts("pad", "pad widths", pad_width, x.shape)
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
