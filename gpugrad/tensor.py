"""``Tensor``: one array on one device, plus the autograd bookkeeping (``requires_grad``, ``grad``,
and ``_ctx``, the recorded Function that produced it).

This module defines the data side only and imports nothing above the backend. Everything that
runs an op -- operators, op methods (``t.exp()``), in-place methods, ``__setitem__``, ``.to``,
``.T``, ``.backward`` -- is attached in one place, ``gpugrad.ops.tensor_methods``, when gpugrad
is imported.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

from .backend import Device, host_array
from .backend import device as _device

_SCALARS = (int, float, bool)
_FLOAT_KINDS = "fc"


class _Tracing(threading.local):
    """The ``gg.compile`` tracer recording this thread's calls, or None (the usual case). Kept
    here, in the lowest module that reports to it; ``gpugrad.autograd`` hands it on.

    A thread-local read costs several plain ones, and the hot paths (``Function.apply``,
    ``Tensor._wrap``) would pay it on every call, so they test ``_tracers.count`` first: the
    number of threads with a tracer installed, kept here as ``tracer`` is set. A thread that
    ended while tracing leaves the count too high, which only costs those paths their speed.

    ``Tensor.grad`` is the bare slot (no Python call to read or assign ``.grad``) until the first
    tracer is installed, then a property that tells the tracer of assignments, for good: each
    change of a class attribute uses up one of the type's version tags, and CPython >= 3.12 stops
    specializing attribute access on a type after 1000 of them, while a trace installs and
    removes its tracer many times."""

    tracer = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "tracer":
            change = (value is not None) - (self.tracer is not None)
            super().__setattr__(name, value)
            if change:
                with _tracers.lock:  # += is not atomic across threads
                    _tracers.count += change
                    if Tensor.__dict__["grad"] is not _TRACED_GRAD:
                        Tensor.grad = _TRACED_GRAD
        else:
            super().__setattr__(name, value)


class _TracerCount:
    """How many threads have a ``gg.compile`` tracer installed (see ``_Tracing``)."""

    __slots__ = ("count", "lock")

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()


_tracers = _TracerCount()
_tracing = _Tracing()


def is_device_array(data: Any) -> bool:
    return hasattr(data, "__cuda_array_interface__")


def as_dtype(dtype: Any, op: str) -> np.dtype:
    """``dtype`` (a name, NumPy type or dtype) as a NumPy dtype a tensor can hold: numbers and
    bools only, so strings, objects and datetimes fail here, naming ``op``, not deep in NumPy."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:  # NumPy's "data type 'x' not understood"
        raise TypeError(f"{op}: {exc}; use a NumPy dtype or its name, e.g. 'float32', "
                        "'float64', 'int64' or 'bool'") from None
    if dt.kind not in "biufc":
        raise TypeError(f"{op}: tensors hold numbers or bools, not dtype {dt}")
    return dt


def as_array(data: Any, dtype: Any = None, device: Device | None = None, copy: bool = True):
    """``data`` as an array on ``device``; Python floats default to float32, ints to int64."""
    dtype = None if dtype is None else as_dtype(dtype, "tensor")
    dev = _device(device)
    if dev.type == "cpu":
        return _as_array(data, dtype, dev, copy)
    with dev.activate():  # casts and copies allocate on the current GPU
        return _as_array(data, dtype, dev, copy)


def _as_array(data: Any, dtype: Any, dev: Device, copy: bool):
    if isinstance(data, Tensor):
        arr = data.data if data.device is dev else dev.put(data.data)
        arr = arr.astype(dtype) if dtype is not None else arr
        return _own_c_order(arr, data.data) if copy else arr
    if isinstance(data, np.ndarray) or is_device_array(data):
        arr = dev.put(data, dtype=dtype)
        return _own_c_order(arr, data) if copy else arr
    if isinstance(data, np.generic):
        return dev.put(np.asarray(data, dtype=dtype))
    try:
        try:
            host = np.asarray(data, dtype=dtype)
        except TypeError:  # GPU tensors or arrays nested in lists: NumPy cannot read them
            host = np.asarray(nested_to_host(data), dtype=dtype)
    except ValueError as exc:  # ragged nesting
        raise TypeError(f"tensor: cannot build a tensor from {type(data).__name__} data: {exc}") \
            from None
    if host.dtype == object or host.dtype.kind in "USV":
        raise TypeError(
            f"tensor: cannot build a tensor from {type(data).__name__} data "
            f"(NumPy sees dtype {host.dtype}); use numbers or nested lists of equal length"
        )
    if dtype is None:
        if host.dtype.kind == "f":
            host = host.astype(np.float32)
        elif host.dtype.kind in "iu":
            host = host.astype(np.int64)
    return dev.put(host)


def _own_c_order(arr: Any, source: Any) -> Any:
    """``arr`` (made from the array ``source``) as a C-ordered array of its own. Copied when it is
    ``source`` itself or shares its GPU memory (CuPy wraps other libraries' GPU arrays without
    copying), and when it is not C-contiguous: casts and CuPy's host-to-device copies keep a
    Fortran-ordered or strided source's order ("K"), which the optimizers would refuse."""
    if arr is source or _same_memory(arr, source) or not arr.flags.c_contiguous:
        return arr.copy()  # order "C" (NumPy's and CuPy's default)
    return arr


def _same_memory(arr: Any, data: Any) -> bool:
    """Whether ``arr`` (just made from ``data``) points at ``data``'s GPU memory."""
    if not is_device_array(data) or not is_device_array(arr):
        return False
    return arr.__cuda_array_interface__["data"][0] == data.__cuda_array_interface__["data"][0]


def nested_to_host(data: Any) -> Any:
    """Nested lists/tuples with every GPU tensor or array in them copied to the host."""
    if isinstance(data, Tensor):
        return data.numpy()
    if is_device_array(data):
        return host_array(data)
    if isinstance(data, (list, tuple)):
        return [nested_to_host(x) for x in data]
    return data


class _Size(int):
    """``Tensor.size``: the element count (NumPy's ``a.size``) that can also be called like
    PyTorch's ``t.size()`` (the shape) and ``t.size(dim)`` (one dimension)."""

    def __new__(cls, count: int, shape: tuple[int, ...]) -> _Size:
        obj = super().__new__(cls, count)
        obj.shape = shape
        return obj

    def __reduce__(self) -> tuple:  # copies and pickles are plain ints
        return int, (int(self),)

    def __call__(self, dim: int | None = None) -> Any:
        if dim is None:
            return self.shape
        if not -len(self.shape) <= dim < len(self.shape):
            raise IndexError(f"size: dim {dim} is out of range for a tensor of shape {self.shape}")
        return self.shape[dim]


class Tensor:
    """An n-dimensional array on one device that can record the ops applied to it."""

    __slots__ = ("data", "device", "requires_grad", "_grad", "_ctx", "_name", "__weakref__")
    __array_ufunc__ = None  # make ndarray <op> Tensor defer to Tensor's reflected operators
    grad: Tensor | None  # the gradient backward() accumulated (None until then); set below

    def __init__(self, data: Any, dtype: Any = None, device: Any = None,
                 requires_grad: bool = False) -> None:
        self.device = _device(device if device is not None else
                              (data.device if isinstance(data, Tensor) else None))
        self.data = as_array(data, dtype, self.device)
        self._grad = None
        self._ctx = None
        self._name = None
        self.requires_grad = False
        if _tracers.count and _tracing.tracer is not None:  # gg.compile: copies traced data?
            _tracing.tracer.on_new_tensor(self, data)
        if requires_grad:
            self.requires_grad_(True)

    @staticmethod
    def _wrap(data, device: Device, requires_grad: bool = False, ctx=None) -> Tensor:
        """Build a Tensor around an existing array without copying or checking (internal)."""
        t = Tensor.__new__(Tensor)
        t.data = data
        t.device = device
        t.requires_grad = requires_grad
        t._grad = None
        t._ctx = ctx
        t._name = None
        if _tracers.count and _tracing.tracer is not None:  # gg.compile: made off the tape
            _tracing.tracer.on_untracked(t)
        return t

    # -- properties ------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> _Size:
        """The element count, an ``int`` as in NumPy; ``t.size(dim)`` also works, as in torch."""
        return _Size(self.data.size, self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def name(self) -> str | None:
        """A label for ``gg.explain`` / ``gg.to_dot`` (also given to the node that made it)."""
        return self._name

    @name.setter
    def name(self, value: str | None) -> None:
        self._name = value
        if self._ctx is not None:
            self._ctx.name = value

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def grad_fn(self):
        return self._ctx

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # -- conversion ------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """A host (NumPy) copy of the data; never part of the graph."""
        _host_read(self, ".numpy()")
        return np.array(self.device.backend.to_host(self.data), copy=True)

    def item(self) -> Any:
        _host_read(self, ".item() (also bool(), float(), int() and indexing with a tensor)")
        if self.data.size != 1:
            raise ValueError(
                f"item: only one-element tensors convert to a scalar, got shape {self.shape}")
        return self.device.backend.to_host(self.data).item()  # via the backend: settles checks

    def tolist(self) -> Any:
        _host_read(self, ".tolist()")
        return self.device.backend.to_host(self.data).tolist()

    def __array__(self, dtype=None, copy=None):
        if self.device.type != "cpu":
            raise TypeError(
                f"cannot convert a tensor on {self.device} to a NumPy array implicitly; "
                "call .numpy() or .cpu() first"
            )
        _host_read(self, "np.asarray(tensor)")
        return self.data if dtype is None else self.data.astype(dtype)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise ValueError(
                f"the truth value of a tensor with {self.data.size} elements is ambiguous"
            )
        return bool(self.item())

    def __index__(self) -> int:
        if self.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError("only one-element integer tensors can be used as an index")
        return int(self.item())

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self, i: int = 0) -> Tensor:
        return self.to(f"cuda:{i}")

    def detach(self) -> Tensor:
        """The same data, cut from the graph."""
        return Tensor._wrap(self.data, self.device)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if not self.is_leaf:
            raise RuntimeError(
                "requires_grad_: only leaf tensors can change requires_grad; use .detach() first"
            )
        if requires_grad and self.dtype.kind not in _FLOAT_KINDS:
            raise TypeError(
                "requires_grad_: only floating-point tensors can require gradients, "
                f"got {self.dtype}"
            )
        self.requires_grad = requires_grad
        return self

    # PyTorch spellings of NumPy-style attributes and casts
    def numel(self) -> int: return self.data.size
    def dim(self) -> int: return self.data.ndim

    def __dlpack__(self, *args: Any, **kwargs: Any):
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    # -- autograd --------------------------------------------------------------------------
    def _accumulate_grad(self, g) -> None:
        if g.__class__ is not Tensor:
            if g.shape != self.shape:  # a scalar-shaped seed or NumPy scalar reaching a leaf
                g = self.device.xp.broadcast_to(g, self.shape).copy()
            g = Tensor._wrap(g, self.device)
        # Out of place: the incoming array may be shared with another leaf's grad.
        self.grad = g if self.grad is None else self.grad + g

    # -- display ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        body = np.array2string(self.device.backend.to_host(self.data), separator=", ",
                               prefix="tensor(", precision=4)
        extras = []
        if self.device.type != "cpu":
            extras.append(f"device='{self.device}'")
        if self.dtype not in (np.float32, np.int64, np.bool_):
            extras.append(f"dtype={self.dtype}")
        if self._ctx is not None:
            extras.append(f"grad_fn={type(self._ctx).__name__}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        if self.name:
            extras.append(f"name='{self.name}'")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    __hash__ = object.__hash__

    def writable_data(self):
        """The tensor's own array, safe to write in place (``t.writable_data()[...] = 0``).

        ``self.data`` itself, first replaced by a copy when anything else may hold it: a graph
        node that saved it for backward, another tensor sharing it (``detach``), or a view of its
        memory -- writing into a shared array would silently change what backward computes.
        Optimizers, initialisers and ``load_state_dict`` update parameters through it. Nothing
        is recorded: use it under ``no_grad`` semantics (the write is invisible to autograd)."""
        arr, refs = _array_refs(self)
        if arr.base is not None or refs > _SOLE_HOLDER_REFS:  # NumPy's temporary elision
            with self.device.activate():  # tests references the same way
                arr = self.data = arr.copy()
        return arr


def _set_grad_traced(t: Tensor, value: Tensor | None) -> None:
    t._grad = value
    if _tracers.count and _tracing.tracer is not None:  # gg.compile replays the assignment
        _tracing.tracer.on_grad_set(t)


# ``Tensor.grad``: the slot ``_grad`` itself until a thread first traces, then this property
# (see ``_Tracing``).
_PLAIN_GRAD = Tensor.__dict__["_grad"]
_TRACED_GRAD = property(_PLAIN_GRAD.__get__, _set_grad_traced,
                        doc="The gradient accumulated by ``backward()`` (None until then).")
Tensor.grad = _PLAIN_GRAD


def _host_read(t: Tensor, what: str) -> None:
    if _tracers.count and _tracing.tracer is not None:
        _tracing.tracer.on_host_read(t, what)


def _array_refs(t: Tensor) -> tuple[Any, int]:
    arr = t.data
    return arr, sys.getrefcount(arr)


# What _array_refs counts when the tensor is the array's only holder, measured rather than
# assumed (how many references a call adds differs between Python versions).
_SOLE_HOLDER_REFS = _array_refs(Tensor._wrap(np.zeros(1), None))[1]
