"""Indexing ops: ``t[index]`` and ``t[index] = value``, ``gather`` / ``take_along_axis``,
``split`` / ``chunk`` (pieces by slicing) and ``embedding`` (rows of a table). Each Function's
forward beside its derivative rule, then the public wrappers. Integer-array indices may repeat,
so their gradients are scatter-adds; CuPy wraps out-of-range indices silently, so they are
bounds-checked here on every device.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..autograd import (
    Function,
    _tracing,
    host_constant,
    is_grad_enabled,
    traced_call,
    untraceable,
)
from ..backend import DeviceError, checks
from ..tensor import Tensor, as_array, is_device_array, nested_to_host
from ._coerce import as_tensor
from ._rules import axis_of, reduce_to
from .elementwise import where
from .shape import nonnegative_ints, reshape, unsqueeze

_SCALARS = (int, float, bool)


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


# -- public wrappers -------------------------------------------------------------------------------
def _index_part(part, x: Tensor, op: str = "getitem"):
    if part.__class__ is Tensor:
        if part.device is not x.device:
            if part.device.type != "cpu":
                raise DeviceError(f"{op}: index is on {part.device} but the tensor is on "
                                  f"{x.device}")
            part = part.to(x.device)
        part = part.data
    elif isinstance(part, (list, np.ndarray)):
        host = np.asarray(part)
        if host.size == 0 and isinstance(part, list):
            host = host.astype(np.intp)  # [] means no indices (NumPy's rule), not a float array
        part = host_constant(x.device.backend.asarray(host))
    else:
        if isinstance(part, float):
            raise IndexError(f"{op}: only integers, slices, None, Ellipsis and integer or bool "
                             f"arrays are valid indices, got {part!r} (tensor shape {x.shape})")
        return part
    if part.dtype.kind not in "iub":
        raise IndexError(f"{op}: index arrays must be integer or bool, got {part.dtype}")
    return part


def _bounds_error(op: str, dim: int, n: int, shape: tuple):
    def error(f) -> IndexError | None:
        lo, hi = int(f[0]), int(f[1])
        if lo >= -n and hi < n:
            return None
        return IndexError(f"{op}: index {hi if hi >= n else lo} is out of bounds for axis {dim} "
                          f"with size {n} (tensor shape {shape})")

    return error


def _check_bounds(index: tuple, shape: tuple, op: str = "getitem", xp=np) -> None:
    """CuPy does not bounds-check integer-array indices (it wraps); check them like NumPy does
    (deferred to the next host read: ``backend.checks``)."""
    consumed = [0 if p is None else (p.ndim if hasattr(p, "dtype") and p.dtype == np.bool_
                                     else 1) for p in index if p is not Ellipsis]
    dim = 0
    for p in index:
        if p is Ellipsis:
            dim += len(shape) - sum(consumed)
            continue
        if hasattr(p, "dtype") and p.dtype.kind in "iu" and p.size and dim < len(shape):
            n = shape[dim]
            # deferred: read at the next host read (no sync per index array), then IndexError
            flags = xp.stack([p.min(), p.max()]).astype(np.int64)
            checks.require(flags, _bounds_error(op, dim, n, shape))
        dim += 0 if p is None else (p.ndim if hasattr(p, "dtype") and p.dtype == np.bool_
                                    else 1)


def _is_index_array(p, kind: str) -> bool:
    return hasattr(p, "dtype") and not isinstance(p, np.generic) and p.ndim > 0 \
        and p.dtype.kind in kind


def _masks_to_indices(parts: tuple) -> tuple:
    """A boolean array among other index arrays means its ``nonzero()`` integer arrays (NumPy's
    rule). CuPy supports a boolean array only on its own, so spell it out for every device."""
    out = []
    for p in parts:
        if _is_index_array(p, "b"):
            out.extend(p.nonzero())
        else:
            out.append(p)
    return tuple(out)


def _prepare_index(x: Tensor, index, op: str):
    """``index`` for ``x.data[...]``: arrays on x's device, masks among other index arrays spelled
    out, and integer arrays bounds-checked on CUDA (CuPy wraps out-of-range values silently)."""
    parts = tuple(_index_part(p, x, op) for p in (index if isinstance(index, tuple) else (index,)))
    if len(parts) > 1 and any(_is_index_array(p, "b") for p in parts) and \
            len([p for p in parts if _is_index_array(p, "biu")]) > 1:
        with x.device.activate():  # nonzero() runs on the index arrays' (x's) device
            parts = _masks_to_indices(parts)
    if x.device.type != "cpu" and any(hasattr(p, "dtype") for p in parts):
        with x.device.activate():  # one gg.compile step: a replay checks its own indices
            traced_call(_check_bounds, parts, x.shape, op, x.device.xp)
    return parts if isinstance(index, tuple) else parts[0]


def getitem(x, index) -> Tensor:
    x = as_tensor(x)
    return GetItem.apply(x, index=_prepare_index(x, index, "getitem"))


def index_put(x: Tensor, value, index) -> Tensor:
    """``x`` with ``x[index] = value`` applied to a copy (``index`` prepared by _prepare_index)."""
    return IndexPut.apply(x, value, index=index)


def unindex(g, index, shape, accumulate: bool) -> Tensor:
    return UnIndex.apply(g, index=index, shape=shape, accumulate=accumulate)


def setitem(self: Tensor, index: Any, value: Any) -> None:
    """``t[index] = value``. Recorded when ``t`` or ``value`` requires grad (in grad mode), so
    gradients flow to both; otherwise written in place (see ``writable_data``)."""
    tracked = is_grad_enabled() and self.dtype.kind in "fc" and (
        self.requires_grad or (isinstance(value, Tensor) and value.requires_grad))
    if tracked and self.requires_grad and self._ctx is None:
        raise RuntimeError(
            f"__setitem__: a leaf tensor that requires grad (shape {self.shape}) cannot be "
            "changed in place while grad mode is on; wrap the update in `with gg.no_grad():`"
        )
    if isinstance(value, Tensor):
        if value.device is not self.device:
            raise DeviceError(f"__setitem__: value is on {value.device} but the tensor is on "
                              f"{self.device}; move it with .to(device) first")
    elif (self.device.type != "cpu" or tracked) and value.__class__ not in _SCALARS and \
            not isinstance(value, np.generic):
        # CuPy takes only scalars and arrays of its own device (a NumPy array or a list
        # assigned to a slice raises there), and a recorded write needs an array: bring the
        # value over, as ops do with operands.
        value = as_array(value, self.dtype, self.device, copy=False)
    index = _prepare_index(self, index, "__setitem__")
    try:
        if tracked:  # a new node: the graph built so far keeps the old array
            out = index_put(self, value, index)
            self.data, self._ctx, self.requires_grad = out.data, out._ctx, True
            if _tracing.tracer is not None:  # gg.compile replays the rebinding
                _tracing.tracer.on_rebind(self)
            return
        untraceable("t[index] = value (not recorded: no tensor requires grad)",
                    "an in-place write outside the recorded ops")
        value = value.data if isinstance(value, Tensor) else value
        with self.device.activate():  # CuPy writes with a kernel on the current GPU
            self.writable_data()[index] = value
    except ValueError as exc:  # NumPy's/CuPy's broadcast error, with the op and shapes added
        shape = getattr(value, "shape", ())
        raise ValueError(f"__setitem__: a value of shape {tuple(shape)} does not fit the "
                         f"selected elements of a tensor of shape {self.shape} ({exc})") \
            from None


def _index_tensor(op: str, index, x: Tensor) -> Tensor:
    if index.__class__ is not Tensor and is_device_array(index):
        index = Tensor(index, device=x.device)  # a CuPy array: no trip through NumPy
    elif index.__class__ is not Tensor:
        try:
            host = np.asarray(index)
        except TypeError:  # GPU arrays nested in a list: NumPy cannot read them
            host = np.asarray(nested_to_host(index))
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
    x = as_tensor(x)
    a = axis_of("gather", axis, x.shape)
    return Gather.apply(x, _index_tensor("gather", index, x), axis=a, torch_rule=True)


def take_along_axis(x, indices, axis) -> Tensor:
    """NumPy's ``take_along_axis``: like ``gather`` but ``indices`` broadcasts against ``x``
    outside ``axis`` and may be negative (from the end); ``axis=None`` works on the flattened x."""
    x = as_tensor(x)
    if axis is None:
        x, axis = reshape(x, -1), 0
    a = axis_of("take_along_axis", axis, x.shape)
    return Gather.apply(x, _index_tensor("take_along_axis", indices, x), axis=a,
                        torch_rule=False)


def _pieces(x: Tensor, axis: int, sizes) -> tuple[Tensor, ...]:
    lead, out, start = (slice(None),) * axis, [], 0
    for n in sizes:
        out.append(getitem(x, lead + (slice(start, start + n),)))
        start += n
    return tuple(out)


def split(x, split_size_or_sections, axis: int = 0) -> tuple[Tensor, ...]:
    """``torch.split``: an int is the size of each piece (the last may be smaller); a sequence
    gives every piece's size and must sum to the axis' length. Each piece is differentiable."""
    x = as_tensor(x)
    a = axis_of("split", axis, x.shape)
    n = x.shape[a]
    if isinstance(split_size_or_sections, (int, np.integer)) and \
            not isinstance(split_size_or_sections, bool):
        (size,) = nonnegative_ints("split", "split_size", split_size_or_sections, x.shape)
        if size == 0:
            if n:
                raise ValueError(f"split: split_size must be positive for axis {axis} of size "
                                 f"{n} (tensor shape {x.shape})")
            return (x,)
        sizes = [size] * (n // size) + ([n % size] if n % size else [])
        return _pieces(x, a, sizes or [0])
    sizes = nonnegative_ints("split", "section sizes", split_size_or_sections, x.shape)
    if sum(sizes) != n:
        raise ValueError(f"split: section sizes {list(sizes)} sum to {sum(sizes)}, but axis "
                         f"{axis} has size {n} (tensor shape {x.shape})")
    return _pieces(x, a, sizes)


def chunk(x, chunks: int, axis: int = 0) -> tuple[Tensor, ...]:
    """``torch.chunk``: pieces of ``ceil(n / chunks)`` along ``axis`` (so possibly fewer than
    ``chunks`` pieces, the last one smaller)."""
    x = as_tensor(x)
    if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)) or chunks < 1:
        raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r} "
                         f"(tensor shape {x.shape})")
    a = axis_of("chunk", axis, x.shape)
    if x.shape[a] == 0:  # torch: ``chunks`` empty pieces
        return _pieces(x, a, [0] * int(chunks))
    return split(x, max(-(-x.shape[a] // int(chunks)), 1), a)


def embedding_indices(op: str, indices: Any, weight: Tensor) -> Tensor:
    """``indices`` as an integer tensor on ``weight``'s device (non-tensors are converted)."""
    if indices.__class__ is not Tensor:
        if isinstance(indices, (list, tuple)) and np.asarray(indices).size == 0:
            indices = np.asarray(indices, dtype=np.int64)  # [] means no indices, not floats
        indices = Tensor(indices, device=weight.device)
    elif indices.device is not weight.device:
        raise DeviceError(f"{op}: indices are on {indices.device} but the weight is on "
                          f"{weight.device}; move them to one device with .to(device) first")
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{op}: indices must be an integer tensor, got dtype {indices.dtype} "
                        f"(shape {indices.shape})")
    return indices


def check_embedding_range(op: str, idx: Tensor, num: int) -> None:
    """ValueError naming the first index outside ``[0, num)``: raised now on the CPU, at the next
    host read on a GPU (a deferred check: no sync in the lookup). One ``gg.compile`` step, so a
    replay checks its own indices."""
    traced_call(_check_embedding_range, op, idx, num)


def _check_embedding_range(op: str, idx: Tensor, num: int) -> None:
    if idx.size == 0:
        return
    shape = idx.shape
    with idx.device.activate():
        a = idx.data.reshape(-1)
        bad = (a < 0) | (a >= num)
        flat = idx.device.xp.argmax(bad)  # the first bad position (0 when none)
        flags = idx.device.xp.stack([bad[flat].astype(np.int64), flat.astype(np.int64),
                                     a[flat].astype(np.int64)])  # fmt: skip

    def error(f) -> ValueError | None:
        if not f[0]:
            return None
        pos = tuple(int(i) for i in np.unravel_index(int(f[1]), shape))
        return ValueError(f"{op}: index {int(f[2])} at position {pos} of the indices (shape "
                          f"{shape}) is out of range [0, {num}) (num_embeddings={num})")

    checks.require(flags, error)


def padding_idx_arg(op: str, padding_idx: Any, num: int) -> int | None:
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral):
        raise TypeError(f"{op}: padding_idx must be an int or None, got {padding_idx!r}")
    if not -num <= padding_idx < num:
        raise ValueError(f"{op}: padding_idx must be within [-{num}, {num}) for "
                         f"num_embeddings={num}, got {padding_idx}")
    return int(padding_idx) % num


def embedding(input: Any, weight: Tensor, padding_idx: int | None = None) -> Tensor:  # noqa: A002
    """Rows of ``weight`` (num_embeddings, embedding_dim) at the integer ``input`` indices:
    output shape ``input.shape + (embedding_dim,)``. Indices outside ``[0, num_embeddings)``
    raise ValueError (one host sync on a GPU); ``padding_idx`` rows get no gradient."""
    op = "embedding"
    if weight.__class__ is not Tensor or weight.ndim != 2:
        raise ValueError(f"{op}: weight must be a 2-d Tensor (num_embeddings, embedding_dim), got "
                         f"{getattr(weight, 'shape', type(weight).__name__)}")
    num = weight.shape[0]
    pad = padding_idx_arg(op, padding_idx, num)
    idx = embedding_indices(op, input, weight)
    check_embedding_range(op, idx, num)
    return embedding_lookup(weight, idx, pad)


def embedding_lookup(weight: Tensor, idx: Tensor, pad: int | None) -> Tensor:
    """``weight[idx]`` for checked indices, the ``pad`` rows cut from the graph."""
    # GetItem directly: getitem would check the bounds a second time (two more syncs)
    rows = GetItem.apply(weight, index=idx.data)
    if pad is None or not rows.requires_grad:
        return rows
    keep = unsqueeze(idx != pad, -1)  # (..., 1): broadcasts along embedding_dim
    return where(keep, rows, rows.detach())
