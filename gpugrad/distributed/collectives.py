"""Collectives on tensors: ``all_reduce``, ``broadcast``, ``all_gather``.

Host arrays go to MPI as buffers (``Iallreduce`` on the NumPy memory: no pickling). GPU arrays go
to NCCL on the device's current stream; without NCCL to a CUDA-aware MPI when
``GPUGRAD_CUDA_AWARE_MPI=1`` says the MPI library is one; else through host copies, with a
warning. Each ``start_*`` function begins a collective and returns a function that waits for it
(bounded by the world's timeout) -- DataParallel overlaps buckets with the backward walk this
way; the public functions start and wait at once.

The public functions first compare what each rank passes (element count, dtype, op) with one tiny
all-reduce, so a mismatch is an error on every rank rather than a hang or a corrupt result.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from ..tensor import Tensor
from .runtime import DistributedError, World, world

OPS = ("sum", "mean", "max", "min")
_MPI_OP_NAMES = {"sum": "SUM", "mean": "SUM", "max": "MAX", "min": "MIN"}
_staging_warned = False


def gpu_transport() -> str:
    """How GPU arrays travel: ``"nccl"``, ``"cuda-aware-mpi"`` or ``"host"`` (staged)."""
    from ..backend import nccl

    if nccl.is_available():
        return "nccl"
    if os.environ.get("GPUGRAD_CUDA_AWARE_MPI", "") == "1":
        return "cuda-aware-mpi"
    return "host"


def _warn_staging() -> None:
    global _staging_warned
    if not _staging_warned:
        _staging_warned = True
        warnings.warn("gpugrad.distributed: NCCL is not available, so GPU arrays are copied to "
                      "the host for MPI (slow). Install NCCL (nvidia-nccl-cu12/-cu13), or set "
                      "GPUGRAD_CUDA_AWARE_MPI=1 if your MPI reads GPU memory.",
                      RuntimeWarning, stacklevel=3)


def _start(w: World, device: Any, array: Any, what: str, mpi_start: Callable[[Any], Any],
           nccl_start: Callable[[Any], None]) -> Callable[[], None]:
    """Begin one in-place collective on ``array`` over the transport its device takes:
    ``mpi_start(buffer)`` returns an MPI request, ``nccl_start(communicator)`` enqueues NCCL."""
    if device.type == "cpu":
        req = mpi_start(array)
        return lambda: w.wait([req], what)
    transport = gpu_transport()
    if transport == "nccl":
        comm = w.nccl_communicator(device.index)
        nccl_start(comm)
        event = comm.event()
        return lambda: w.wait_until(lambda: comm.done(event), what)
    if transport == "cuda-aware-mpi":
        device.synchronize()  # MPI reads the memory directly: the kernels writing it must be done
        req = mpi_start(array)
        return lambda: w.wait([req], what)
    _warn_staging()
    host = device.backend.to_host(array)  # waits for the kernels that wrote it
    req = mpi_start(host)

    def finish() -> None:
        w.wait([req], what)
        device.backend.copy_from_host(array, host)

    return finish


def start_all_reduce(w: World, device: Any, array: Any, op: str, what: str) -> Callable[[], None]:
    """Begin reducing the C-contiguous ``array`` over ranks in place ("sum", "max" or "min")."""
    mpi_op = getattr(w.MPI, _MPI_OP_NAMES[op])
    return _start(w, device, array, what,
                  lambda buf: w.comm.Iallreduce(w.MPI.IN_PLACE, buf, op=mpi_op),
                  lambda comm: comm.all_reduce(array, op))


def start_broadcast(w: World, device: Any, array: Any, src: int, what: str) -> Callable[[], None]:
    """Begin overwriting the C-contiguous ``array`` on every rank with rank ``src``'s."""
    return _start(w, device, array, what, lambda buf: w.comm.Ibcast(buf, root=src),
                  lambda comm: comm.broadcast(array, src))


def _all_gather_array(w: World, device: Any, array: Any, what: str) -> Any:
    xp = device.xp
    with device.activate():
        out = xp.empty((w.size,) + array.shape, dtype=array.dtype)
    if device.type == "cpu":
        w.wait([w.comm.Iallgather(array, out)], what)
        return out
    transport = gpu_transport()
    if transport == "nccl":
        comm = w.nccl_communicator(device.index)
        comm.all_gather(array, out)
        event = comm.event()
        w.wait_until(lambda: comm.done(event), what)
    elif transport == "cuda-aware-mpi":
        device.synchronize()
        w.wait([w.comm.Iallgather(array, out)], what)
    else:
        _warn_staging()
        host = np.empty(out.shape, dtype=out.dtype)
        w.wait([w.comm.Iallgather(device.backend.to_host(array), host)], what)
        device.backend.copy_from_host(out, host)
    return out


# -- the public functions -------------------------------------------------------------------
def _check_tensor(t: Any, what: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"distributed.{what}: expected a gpugrad Tensor, got {type(t).__name__}")
    if t.dtype == np.bool_ or t.dtype.kind == "c":
        raise TypeError(f"distributed.{what}: dtype {t.dtype} is not supported (shape {t.shape}); "
                        "use an integer or float tensor")


def _agree(w: World, what: str, t: Tensor, code: int) -> None:
    """Every rank checks that all ranks passed the same element count, dtype and option."""
    mine = np.array([t.size, t.dtype.num, code], dtype=np.int64)
    both = np.concatenate([mine, -mine])
    w.wait([w.comm.Iallreduce(w.MPI.IN_PLACE, both, op=w.MPI.MAX)], what)
    high, low = both[:3], -both[3:]
    if (high != low).any():
        raise DistributedError(
            f"distributed.{what}: ranks passed different tensors or options (rank {w.rank}: "
            f"shape {t.shape}, dtype {t.dtype}, on {t.device}; element counts range "
            f"{low[0]}..{high[0]}, dtype codes {low[1]}..{high[1]}, op/src codes "
            f"{low[2]}..{high[2]}); every rank must pass the same shape and dtype")


def _contiguous(t: Tensor) -> tuple[Any, bool]:
    data = t.data
    if data.flags.c_contiguous and data.flags.writeable:
        return data, False
    with t.device.activate():
        return t.device.xp.ascontiguousarray(data).copy(), True


def all_reduce(t: Tensor, op: str = "sum") -> Tensor:
    """Reduce ``t`` over all ranks, in place on its device; returns ``t``.

    ``op`` is ``"sum"``, ``"mean"`` (float tensors), ``"max"`` or ``"min"``. Not recorded by
    autograd (like ``torch.distributed``). With one rank it leaves ``t`` as it is.
    """
    _check_tensor(t, "all_reduce")
    if op not in OPS:
        raise ValueError(f"distributed.all_reduce: op must be one of {OPS}, got {op!r}")
    if op == "mean" and t.dtype.kind != "f":
        raise TypeError(f"distributed.all_reduce: op='mean' needs a float tensor, got {t.dtype} "
                        f"(shape {t.shape})")
    w = world()
    if w.size == 1:
        return t
    _agree(w, "all_reduce", t, OPS.index(op))
    data, copied = _contiguous(t)
    start_all_reduce(w, t.device, data, "sum" if op == "mean" else op, "all_reduce")()
    with t.device.activate():
        if op == "mean":
            data /= w.size
        if copied:
            t.data[...] = data
    return t


def broadcast(t: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``t`` on every rank with rank ``src``'s values, in place; returns ``t``."""
    _check_tensor(t, "broadcast")
    w = world()
    if not isinstance(src, (int, np.integer)) or not 0 <= src < w.size:
        raise ValueError(f"distributed.broadcast: src must be a rank in [0, {w.size}), "
                         f"got {src!r}")
    if w.size == 1:
        return t
    _agree(w, "broadcast", t, int(src))
    data, copied = _contiguous(t)
    start_broadcast(w, t.device, data, int(src), "broadcast")()
    if copied:
        with t.device.activate():
            t.data[...] = data
    return t


def all_gather(t: Tensor) -> Tensor:
    """Every rank's ``t``, stacked along a new first axis: shape ``(world_size, *t.shape)``."""
    _check_tensor(t, "all_gather")
    w = world()
    if w.size == 1:
        with t.device.activate():
            return Tensor._wrap(t.data[None].copy(), t.device)
    _agree(w, "all_gather", t, 0)
    data, _ = _contiguous(t)
    return Tensor._wrap(_all_gather_array(w, t.device, data, "all_gather"), t.device)
