"""NCCL through CuPy (``cupy.cuda.nccl``): the GPU side of ``gpugrad.distributed``.

The bootstrap is ChainerMN's: rank 0 calls ``get_unique_id()``, MPI broadcasts the 128 bytes, and
every rank builds ``NcclCommunicator(world_size, uid, rank)`` on its own GPU. Collectives are
enqueued on the device's current CuPy stream, after the kernels that produced their inputs, and
return at once; ``Communicator.event()`` marks the point to wait for.

Only this package imports cupy, so the distributed layer reaches NCCL through these functions.
"""

from __future__ import annotations

import numpy as np

_OPS = ("sum", "prod", "max", "min")


def status() -> tuple[bool, str]:
    """``(available, detail)``: the NCCL runtime version (``"2.27.3"``), or why there is none."""
    try:
        from cupy.cuda import nccl
    except Exception as exc:  # no cupy, or a broken CUDA install
        return False, f"cupy.cuda.nccl cannot be imported ({type(exc).__name__}: {exc})"
    if not getattr(nccl, "available", False):
        return False, ("CuPy found no NCCL library; install nvidia-nccl-cu12/-cu13 (the CUDA "
                       "extras bring it)")
    try:
        code = int(nccl.get_version())
    except Exception as exc:
        return False, f"NCCL is present but get_version failed ({type(exc).__name__}: {exc})"
    # NCCL >= 2.9 encodes X.Y.Z as X*10000 + Y*100 + Z; older ones as X*1000 + Y*100 + Z.
    major, rest = divmod(code, 10000) if code >= 20900 else divmod(code, 1000)
    return True, f"{major}.{rest // 100}.{rest % 100}"


def is_available() -> bool:
    return status()[0]


def unique_id() -> np.ndarray:
    """A fresh NCCL unique id as 128 host bytes (rank 0 makes it; MPI broadcasts the buffer)."""
    from cupy.cuda import nccl

    uid = nccl.get_unique_id()
    if not isinstance(uid, bytes):  # CuPy < 14 returned a tuple of signed chars
        uid = bytes(np.asarray(uid, dtype=np.int8).view(np.uint8))
    return np.frombuffer(uid, dtype=np.uint8).copy()


def _nccl_dtype(nccl, dtype: np.dtype) -> int:
    table = {
        "int8": nccl.NCCL_INT8, "uint8": nccl.NCCL_UINT8, "int32": nccl.NCCL_INT32,
        "uint32": nccl.NCCL_UINT32, "int64": nccl.NCCL_INT64, "uint64": nccl.NCCL_UINT64,
        "float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32,
        "float64": nccl.NCCL_FLOAT64,
    }
    try:
        return table[np.dtype(dtype).name]
    except KeyError:
        raise TypeError(f"NCCL: no NCCL type for dtype {np.dtype(dtype)}; use one of "
                        f"{', '.join(table)}") from None


class Communicator:
    """One rank's NCCL communicator on GPU ``device_index``."""

    def __init__(self, device_index: int, world_size: int, rank: int, uid: np.ndarray) -> None:
        import cupy
        from cupy.cuda import nccl

        self._nccl = nccl
        self._cupy = cupy
        self.device_index = device_index
        with cupy.cuda.Device(device_index):
            self._comm = nccl.NcclCommunicator(world_size, bytes(np.asarray(uid, np.uint8)),
                                               rank)

    def _stream(self) -> int:
        return self._cupy.cuda.get_current_stream(self.device_index).ptr

    def _check(self, array, what: str) -> None:
        if not array.flags.c_contiguous:
            raise ValueError(f"NCCL {what}: the buffer must be C-contiguous "
                             f"(shape {array.shape}, dtype {array.dtype})")

    def all_reduce(self, array, op: str = "sum") -> None:
        """In place: every rank's ``array`` becomes the reduction over ranks."""
        self._check(array, "all_reduce")
        nccl = self._nccl
        code = {"sum": nccl.NCCL_SUM, "prod": nccl.NCCL_PROD, "max": nccl.NCCL_MAX,
                "min": nccl.NCCL_MIN}[op]
        with self._cupy.cuda.Device(self.device_index):
            self._comm.allReduce(array.data.ptr, array.data.ptr, array.size,
                                 _nccl_dtype(nccl, array.dtype), code, self._stream())

    def broadcast(self, array, root: int) -> None:
        """In place: every rank's ``array`` becomes rank ``root``'s."""
        self._check(array, "broadcast")
        with self._cupy.cuda.Device(self.device_index):
            self._comm.bcast(array.data.ptr, array.size, _nccl_dtype(self._nccl, array.dtype),
                             root, self._stream())

    def all_gather(self, array, out) -> None:
        """``out`` (``world_size * array.size`` elements) receives every rank's ``array``."""
        self._check(array, "all_gather")
        self._check(out, "all_gather")
        with self._cupy.cuda.Device(self.device_index):
            self._comm.allGather(array.data.ptr, out.data.ptr, array.size,
                                 _nccl_dtype(self._nccl, array.dtype), self._stream())

    def event(self):
        """A CUDA event recorded after the collectives enqueued so far; ``done(event)`` polls it."""
        with self._cupy.cuda.Device(self.device_index):
            ev = self._cupy.cuda.Event(block=False, disable_timing=True)
            ev.record(self._cupy.cuda.get_current_stream(self.device_index))
        return ev

    def done(self, event) -> bool:
        """Whether ``event`` completed; raises if NCCL reported an asynchronous error."""
        self._comm.check_async_error()
        return bool(event.done)

    def abort(self) -> None:
        """Tear down after a failure, so no kernel waits forever for a peer that is gone."""
        self._comm.abort()


def device_array_from_host(host: np.ndarray, like) -> None:
    """Copy ``host`` into the GPU array ``like`` (same shape), on ``like``'s device."""
    like.set(np.ascontiguousarray(host, dtype=like.dtype).reshape(like.shape))


def synchronize_current_stream(device_index: int) -> None:
    """Let the host (MPI) read device memory only after the kernels that wrote it finished."""
    import cupy

    cupy.cuda.get_current_stream(device_index).synchronize()
