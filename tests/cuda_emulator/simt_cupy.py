"""A CuPy stand-in for the emulator tier, and nothing else: never installed, never importable by
users (it lives in tests/ and is put in ``sys.modules["cupy"]`` only while a test runs).

Device memory is host memory from ``posix_memalign`` (256-byte aligned like ``cudaMalloc``),
filled with 0xFF (NaN) like uninitialised memory, with a guard zone of random bytes on both sides
checked after every launch; under ``GPUGRAD_SIMT_SANITIZE=1`` the
allocation is exact, so AddressSanitizer's own redzones report an out-of-range access at once.
``RawModule`` builds the CUDA source with ``simt_build`` (g++ + the fiber runtime) and every
``RawKernel`` call checks its launch against the compiled kernel: argument count, each argument's
C type and size (a pointer's element type against the array's dtype), block size against
``__launch_bounds__`` and dynamic shared memory against the kernel's limit. Each launch runs once
per thread order in :data:`ORDERS` from the same starting memory and must leave identical bytes.
Device-to-host reads (``.get()``, ``.item()``, ``int()``, ``asnumpy`` ...) are counted in
:data:`host_reads`. Stream capture and CUDA graphs: ``simt_graph``.
"""

from __future__ import annotations

import ctypes
import os
import sys
import weakref
from types import SimpleNamespace

import numpy as np
import simt_build
import simt_graph

try:  # bfloat16 arrays need ml_dtypes (test extra); the bf16 cases skip without it
    from ml_dtypes import bfloat16
except ImportError:  # pragma: no cover
    bfloat16 = None

#: Thread orders every launch runs in ("random" uses SEED); outputs must match byte for byte.
ORDERS: tuple[str, ...] = ("forward", "reverse", "random")
SEED = int(os.environ.get("GPUGRAD_SIMT_SEED", "20261203"))
_ORDER_CODE = {"forward": 0, "reverse": 1, "random": 2}
GUARD = 256
#: Device-to-host transfers so far (tests reset it and compare).
host_reads = 0
#: Driver calls setting a kernel attribute (max dynamic shared memory) so far.
attribute_sets = 0
#: Every launch as (kernel name, grid, block, shared bytes), for tests that inspect them.
launches: list[tuple[str, tuple, tuple, int]] = []


class SimtError(RuntimeError):
    """A kernel misbehaved in the emulator: a failed meeting check, an out-of-range write, or
    outputs that depend on the thread order (a race)."""


class CompileException(Exception):
    def get_message(self) -> str:
        return str(self)


# ---------------------------------------------------------------------------------------------
# memory

_libc = ctypes.CDLL(None)
_libc.posix_memalign.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]
_live: weakref.WeakSet = weakref.WeakSet()
_guard_rng = np.random.default_rng(12345)


class _Buffer:
    """One allocation: ``nbytes`` at a 256-byte aligned address, guards around it."""

    def __init__(self, nbytes: int) -> None:
        self.guard = 0 if simt_build.sanitize() else GUARD
        self.nbytes = nbytes
        raw = ctypes.c_void_p()
        total = max(1, nbytes + 2 * self.guard)
        if _libc.posix_memalign(ctypes.byref(raw), 256, total):
            raise MemoryError(f"cannot allocate {nbytes} bytes")
        self.raw = raw.value
        self.ptr = self.raw + self.guard
        self.mem = (ctypes.c_ubyte * total).from_address(self.raw)
        self.mem._owner = self  # a plain view (a recorded graph call holds one) keeps it alive
        self.bytes = np.frombuffer(self.mem, np.uint8)
        # Random guard bytes: a value a kernel computes from poisoned input (NaN 0xFF..., which
        # keeps its payload) and writes out of range must still change them.
        self.pattern = _guard_rng.integers(0, 256, 2 * self.guard, dtype=np.uint8)
        self._set_guards()
        weakref.finalize(self, _libc.free, self.raw)
        _live.add(self)

    def _set_guards(self) -> None:
        g = self.guard
        if g:
            self.bytes[:g] = self.pattern[:g]
            self.bytes[g + self.nbytes :] = self.pattern[g:]

    def guard_damage(self) -> str | None:
        g = self.guard
        if not g:
            return None
        zones = (("before", self.bytes[:g], self.pattern[:g], -g),
                 ("after", self.bytes[g + self.nbytes :], self.pattern[g:], self.nbytes))
        for name, zone, want, base in zones:
            bad = np.flatnonzero(zone != want)
            if bad.size:
                self._set_guards()  # reported once; later launches start from a clean guard
                return f"byte {int(bad[0]) + base} ({name} the {self.nbytes}-byte allocation)"
        return None


def _wrap(buf: _Buffer, shape, dtype) -> ndarray:
    dtype = np.dtype(dtype)
    flat = buf.bytes[buf.guard : buf.guard + buf.nbytes].view(dtype)
    arr = flat.reshape(shape).view(ndarray)
    arr._buffer = buf
    return arr


def empty(shape, dtype=np.float64, order="C") -> ndarray:
    shape = (shape,) if np.isscalar(shape) else tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    buf = _Buffer(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
    buf.bytes[buf.guard : buf.guard + buf.nbytes] = 0xFF  # cudaMalloc gives garbage: NaN here
    return _wrap(buf, shape, dtype)


def _run(call) -> None:
    """Device work: done now, or recorded while a stream captures (see simt_graph)."""
    if simt_graph.capturing():
        simt_graph.record(call)
    else:
        call()


def zeros(shape, dtype=np.float64) -> ndarray:
    return full(shape, 0, dtype)


def ones(shape, dtype=np.float64) -> ndarray:
    return full(shape, 1, dtype)


def full(shape, fill_value, dtype=None) -> ndarray:
    dtype = np.asarray(fill_value).dtype if dtype is None else dtype
    out = empty(shape, dtype)
    _run(lambda: np.ndarray.fill(out, fill_value))
    return out


def asarray(a, dtype=None) -> ndarray:
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    simt_graph.refuse_transfer("H2D transfers")
    return _to_device(np.asarray(a, dtype=dtype))


def _to_device(host: np.ndarray) -> ndarray:
    out = empty(host.shape, host.dtype)
    np.copyto(out.view(np.ndarray), host)
    return out


def _captured_result(compute):
    """``compute()``'s array recorded for a graph: allocated now, NaN until launched."""
    with np.errstate(all="ignore"):
        r = compute()
    if not isinstance(r, np.ndarray | np.generic):
        return r
    out = _to_device(np.asarray(r))
    simt_graph.poison(out)
    plain = out.view(np.ndarray)

    def call():
        with np.errstate(all="ignore"):
            np.copyto(plain, compute(), casting="unsafe")

    simt_graph.record(call)
    return out


def ascontiguousarray(a, dtype=None) -> ndarray:
    a = asarray(a, dtype)
    return a if a.flags.c_contiguous else a.copy()


def asnumpy(a) -> np.ndarray:
    global host_reads
    if isinstance(a, ndarray):
        simt_graph.refuse_transfer("D2H transfers")
        host_reads += 1
        return np.array(a.view(np.ndarray))
    return np.asarray(a)


def get_array_module(*arrays):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in arrays) else np


def __getattr__(name: str):
    """Any other CuPy function: NumPy's on host views, results copied into emulator memory."""
    fn = getattr(np, name)
    if isinstance(fn, type) or not callable(fn):
        return fn

    def on_device(*args, **kw):
        args = [a.view(np.ndarray) if isinstance(a, ndarray) else a for a in args]
        if simt_graph.capturing():
            if name in ("matmul", "dot", "tensordot", "einsum", "inner", "vdot"):
                simt_graph.refuse_cublas()
            if name == "copyto" or "out" in kw:  # writes its destination: recorded only
                plain_kw = {k: v.view(np.ndarray) if isinstance(v, ndarray) else v
                            for k, v in kw.items()}  # fmt: skip
                simt_graph.record(lambda: fn(*args, **plain_kw))
                return kw.get("out")
            return _captured_result(lambda: fn(*args, **kw))
        with np.errstate(all="ignore"):  # CuPy never warns about inf/NaN
            r = fn(*args, **kw)
        return _to_device(r) if isinstance(r, np.ndarray) else r

    return on_device


def _captured_or_now(compute):
    if simt_graph.capturing():
        return _captured_result(compute)
    return np.asarray(compute()).view(ndarray)


def _wrap_indices(key, shape):
    """CuPy wraps out-of-range integer-array indices (NumPy raises): do the same, for keys of
    integer arrays, integers and slices (no Ellipsis, None or boolean arrays)."""
    parts = key if isinstance(key, tuple) else (key,)
    if any(p is Ellipsis or p is None or (isinstance(p, np.ndarray) and p.dtype == bool)
           for p in parts):  # fmt: skip
        return key
    out, changed = [], False
    for axis, p in enumerate(parts):
        if isinstance(p, np.ndarray) and p.dtype.kind in "iu" and axis < len(shape) \
                and shape[axis] > 0:  # fmt: skip
            out.append(np.asarray(p) % shape[axis])
            changed = True
        else:
            out.append(p)
    if not changed:
        return key
    return tuple(out) if isinstance(key, tuple) else out[0]


class ndarray(np.ndarray):  # noqa: N801 - CuPy's name
    """A device array: numpy semantics on emulator memory, CuPy's attributes on top."""

    _buffer: _Buffer | None = None

    def __array_finalize__(self, obj) -> None:
        self._buffer = getattr(obj, "_buffer", None)

    @property
    def device(self):
        return Device(0)

    @property
    def data(self):
        return SimpleNamespace(ptr=self.__array_interface__["data"][0])

    def __getitem__(self, key):
        r = super().__getitem__(_wrap_indices(key, self.shape))
        if simt_graph.capturing() and isinstance(r, np.ndarray) \
                and not np.shares_memory(r, self):  # a gather: a kernel, recorded  # fmt: skip
            plain, shape = self.view(np.ndarray), self.shape  # indices read at launch
            return _captured_result(lambda: plain[_wrap_indices(key, shape)])
        return r if isinstance(r, np.ndarray) else np.asarray(r).view(ndarray)

    def __setitem__(self, key, value):
        plain, shape = self.view(np.ndarray), self.shape
        value = value.view(np.ndarray) if isinstance(value, ndarray) else value
        _run(lambda: plain.__setitem__(_wrap_indices(key, shape), value))

    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        """NumPy's ufuncs on the host views; recorded while a stream captures."""
        if ufunc is np.matmul:
            simt_graph.refuse_cublas()
        plain = [x.view(np.ndarray) if isinstance(x, ndarray) else x for x in inputs]
        out = kw.get("out")
        if out is not None:
            kw["out"] = tuple(o.view(np.ndarray) if isinstance(o, ndarray) else o for o in out)
        run = getattr(ufunc, method)

        def compute():
            with np.errstate(all="ignore"):
                return run(*plain, **kw)

        if out is not None:
            _run(compute)
            return out[0] if len(out) == 1 else out
        if simt_graph.capturing():
            return _captured_result(compute)
        r = compute()
        if isinstance(r, tuple):
            return tuple(np.asarray(x).view(ndarray) for x in r)
        return np.asarray(r).view(ndarray) if isinstance(r, np.ndarray | np.generic) else r

    def fill(self, value) -> None:
        plain = self.view(np.ndarray)
        _run(lambda: plain.fill(value))

    def argmax(self, *args, **kw):
        plain = self.view(np.ndarray)
        return _captured_or_now(lambda: plain.argmax(*args, **kw))

    def argmin(self, *args, **kw):
        plain = self.view(np.ndarray)
        return _captured_or_now(lambda: plain.argmin(*args, **kw))

    def astype(self, dtype, copy=True, **kw):
        dtype = np.dtype(dtype)
        if dtype == self.dtype and not copy:
            return self
        out = empty(self.shape, dtype)
        src, dst = self.view(np.ndarray), out.view(np.ndarray)

        def cast():
            with np.errstate(all="ignore"):  # CuPy casts silently (float -> float16 overflows)
                np.copyto(dst, src, casting="unsafe")

        _run(cast)
        return out

    def copy(self, order="C"):
        return self.astype(self.dtype, copy=True)

    def get(self) -> np.ndarray:
        return asnumpy(self)

    def item(self, *args):
        return asnumpy(self).item(*args)

    def tolist(self):
        return asnumpy(self).tolist()

    def __int__(self):
        return int(asnumpy(self))

    def __float__(self):
        return float(asnumpy(self))

    def __bool__(self):
        return bool(asnumpy(self))

    def __index__(self):
        return asnumpy(self).__index__()


# ---------------------------------------------------------------------------------------------
# devices

ATTRIBUTES = {
    # Two SMs: grid-stride loops then really stride (a grid is at most 2 x 8 blocks of 256).
    "MultiProcessorCount": 2,
    "MaxThreadsPerMultiProcessor": 2048,
    # sm_86's opt-in limit: long softmax rows take the re-read path, shorter ones shared memory.
    "MaxSharedMemoryPerBlockOptin": 99 * 1024,
}


class Device:
    def __init__(self, device=0) -> None:
        self.id = int(device)
        self.attributes = dict(ATTRIBUTES)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        return self

    def synchronize(self) -> None:
        pass


def _occupancy(fn_ptr, threads: int, smem: int) -> int:
    return max(1, ATTRIBUTES["MaxThreadsPerMultiProcessor"] // threads)


cuda = SimpleNamespace(
    Device=Device,
    Stream=simt_graph.Stream,
    Graph=simt_graph.Graph,
    Event=simt_graph.Event,
    MemoryPool=simt_graph.MemoryPool,
    using_allocator=simt_graph.using_allocator,
    get_current_stream=simt_graph.get_current_stream,
    compiler=SimpleNamespace(CompileException=CompileException),
    driver=SimpleNamespace(occupancyMaxActiveBlocksPerMultiprocessor=_occupancy),
    nvrtc=SimpleNamespace(getVersion=lambda: (13, 0)),
    runtime=SimpleNamespace(
        getDeviceCount=lambda: 1,
        getDeviceProperties=lambda i: {"name": b"gpugrad SIMT emulator",
                                       "totalGlobalMem": 1 << 34},  # fmt: skip
    ),
)


# ---------------------------------------------------------------------------------------------
# kernels


class _ArgDesc(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_char), ("size", ctypes.c_int), ("pkind", ctypes.c_char),
                ("psize", ctypes.c_int)]  # fmt: skip


_C_NAME = {("f", 4): "float", ("f", 8): "double", ("i", 4): "int", ("i", 8): "long long",
           ("u", 4): "unsigned int", ("u", 8): "unsigned long long", ("h", 2): "half_t",
           ("b", 2): "bf16_t", ("i", 1): "signed char", ("u", 1): "unsigned char",
           ("i", 2): "short", ("u", 2): "unsigned short", ("v", 0): "void"}  # fmt: skip


def _dtype_code(dt: np.dtype) -> tuple[str, int]:
    if dt == np.float16:
        return "h", 2
    if dt.name == "bfloat16":
        return "b", 2
    if dt.kind == "b":
        return "u", 1
    return dt.kind, dt.itemsize


class RawModule:
    def __init__(self, code: str, options=(), name: str = "kernel.cu") -> None:
        try:
            path = simt_build.build_module(code, name)
        except simt_build.BuildError as exc:
            raise CompileException(str(exc)) from exc
        self.lib = ctypes.CDLL(str(path))
        lib = self.lib
        lib.simt_name.restype = ctypes.c_char_p
        u3 = ctypes.POINTER(ctypes.c_uint)
        lib.simt_launch.argtypes = [ctypes.c_int, u3, u3, ctypes.c_size_t,
                                    ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                    ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_size_t]
        self.kernels = {lib.simt_name(i).decode(): i for i in range(lib.simt_count())}

    def get_function(self, name: str) -> RawKernel:
        if name not in self.kernels:
            raise AttributeError(f"no kernel {name!r} in module (has {sorted(self.kernels)})")
        return RawKernel(self, name)


class RawKernel:
    def __init__(self, module: RawModule, name: str) -> None:
        self.module, self.name = module, name
        self.index = module.kernels[name]
        lib = module.lib
        self.max_threads = lib.simt_max_threads(self.index)
        descs = (_ArgDesc * max(1, lib.simt_nargs(self.index)))()
        lib.simt_describe(self.index, descs)
        self.params = [(d.kind.decode(), d.size, d.pkind.decode(), d.psize)
                       for d in descs[: lib.simt_nargs(self.index)]]  # fmt: skip
        # the driver's default (48 KiB less static shared memory, at most 1 KiB in these kernels)
        self._max_dyn = 48 * 1024 - 1024
        self.kernel = SimpleNamespace(ptr=id(self))

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        return self._max_dyn

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, value: int) -> None:
        global attribute_sets
        attribute_sets += 1
        limit = ATTRIBUTES["MaxSharedMemoryPerBlockOptin"] - 1024
        if not 0 <= int(value) <= limit:
            raise RuntimeError(f"{self.name}: cudaErrorInvalidValue: max dynamic shared memory "
                               f"{value} > {limit}")  # fmt: skip
        self._max_dyn = int(value)

    def _param_name(self, i: int) -> str:
        kind, size, pkind, psize = self.params[i]
        if kind == "p":
            return f"{_C_NAME.get((pkind, psize), '?')}*"
        return _C_NAME.get((kind, size), "?")

    def _pack(self, i: int, arg):
        """A ctypes buffer holding argument ``i`` exactly as the kernel's parameter expects."""
        kind, size, pkind, psize = self.params[i]
        where = f"{self.name}: argument {i} (C type {self._param_name(i)})"
        if kind == "p":
            if isinstance(arg, ndarray):
                got = _dtype_code(arg.dtype)
                if pkind != "v" and got != (pkind, psize):
                    raise TypeError(f"{where} got an array of {arg.dtype}")
                if not arg.flags.c_contiguous:
                    raise TypeError(f"{where} got a non-contiguous array of shape {arg.shape}")
                return ctypes.c_uint64(arg.data.ptr)
            if isinstance(arg, np.uint64) and int(arg) == 0:
                return ctypes.c_uint64(0)
            raise TypeError(f"{where} got {type(arg).__name__} {arg!r}; pass a device array "
                            "or np.uint64(0) for a null pointer")  # fmt: skip
        if isinstance(arg, ndarray):
            raise TypeError(f"{where} got an array; the parameter is a scalar")
        # CuPy passes a Python int as int64 and a float as float64, whatever the kernel expects.
        if isinstance(arg, (bool, np.bool_)):
            value = np.bool_(arg)
        elif isinstance(arg, int):
            value = np.int64(arg)
        elif isinstance(arg, float):
            value = np.float64(arg)
        elif isinstance(arg, np.generic):
            value = arg
        else:
            raise TypeError(f"{where} got {type(arg).__name__} {arg!r}")
        if _dtype_code(value.dtype) != (kind, size):
            raise TypeError(f"{where} got {value.dtype} ({value.dtype.itemsize} bytes)")
        return ctypes.create_string_buffer(value.tobytes(), size)

    def __call__(self, grid, block, args, shared_mem: int = 0) -> None:
        args = tuple(args)
        _run(lambda: self._launch(grid, block, args, shared_mem))

    def _launch(self, grid, block, args, shared_mem: int = 0) -> None:
        grid = tuple(int(g) for g in (grid if isinstance(grid, tuple) else (grid,)))
        block = tuple(int(b) for b in (block if isinstance(block, tuple) else (block,)))
        grid3 = (grid + (1, 1))[:3]
        block3 = (block + (1, 1))[:3]
        threads = block3[0] * block3[1] * block3[2]
        if not (1 <= grid3[0] <= 2**31 - 1 and 1 <= grid3[1] <= 65535 and 1 <= grid3[2] <= 65535):
            raise ValueError(f"{self.name}: invalid grid {grid}")
        if not 1 <= threads <= min(1024, self.max_threads):
            raise ValueError(f"{self.name}: block {block} has {threads} threads; the kernel's "
                             f"__launch_bounds__ allows {self.max_threads}")  # fmt: skip
        if shared_mem > self._max_dyn:
            raise ValueError(f"{self.name}: {shared_mem} bytes of dynamic shared memory > the "
                             f"kernel's limit {self._max_dyn} (set max_dynamic_shared_size_bytes)")
        args = tuple(args)
        if len(args) != len(self.params):
            names = ", ".join(map(self._param_name, range(len(self.params))))
            raise TypeError(f"{self.name}: {len(args)} arguments for {len(self.params)} "
                            f"parameters ({names})")
        packed = [self._pack(i, a) for i, a in enumerate(args)]
        argv = (ctypes.c_void_p * max(1, len(packed)))(
            *[ctypes.cast(ctypes.pointer(p), ctypes.c_void_p) for p in packed])  # fmt: skip
        launches.append((self.name, grid3, block3, int(shared_mem)))
        buffers = list(_live)
        before = [b.bytes.copy() for b in buffers]
        results = []
        for k, order in enumerate(ORDERS):
            if k:
                for b, saved in zip(buffers, before):
                    b.bytes[:] = saved
            self._run(argv, grid3, block3, shared_mem, order)
            results.append([b.bytes.copy() for b in buffers])
            for b in buffers:
                damage = b.guard_damage()
                if damage:
                    raise SimtError(f"{self.name} (order {order}): out-of-range write at {damage}")
        for k in range(1, len(results)):
            for b, first, other in zip(buffers, results[0], results[k]):
                diff = np.flatnonzero(first != other)
                if diff.size:
                    raise SimtError(
                        f"{self.name}: thread orders {ORDERS[0]} and {ORDERS[k]} (seed {SEED}) "
                        f"leave different bytes in a {b.nbytes}-byte buffer, first at byte "
                        f"{int(diff[0]) - b.guard}: a race (a missing barrier?)")  # fmt: skip

    def _run(self, argv, grid3, block3, shared_mem, order) -> None:
        err = ctypes.create_string_buffer(4096)
        rc = self.module.lib.simt_launch(
            self.index, (ctypes.c_uint * 3)(*grid3), (ctypes.c_uint * 3)(*block3), shared_mem,
            argv, _ORDER_CODE[order], SEED, err, len(err))  # fmt: skip
        if rc:
            raise SimtError(f"{err.value.decode(errors='replace')} (thread order {order})")
