"""The process world: MPI (mpi4py) when launched by ``mpiexec``, else one rank on its own.

``init()`` reads the launcher's environment. Outside ``mpiexec`` (or under ``mpiexec -n 1``
without mpi4py) the world is a single rank and every collective is a no-op, so scripts run
unchanged. Under ``mpiexec -n N`` it imports mpi4py, finds this rank's place on its node
(``local_rank``, which picks the GPU), and installs an excepthook: an uncaught error on one rank
prints the rank and the error and calls ``MPI.COMM_WORLD.Abort(1)``, so the other ranks are not
left waiting in a collective and ``mpiexec`` exits non-zero.

Every wait here is bounded (``timeout``, default ``GPUGRAD_DIST_TIMEOUT`` or 300 s): collectives
are started non-blocking and polled, and a wait that runs out raises ``DistributedTimeout``.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
import traceback
from typing import Any

import numpy as np

# Variables set by the common launchers (MPICH/Hydra and Intel MPI, Open MPI, PMIx, MVAPICH).
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")
_DEFAULT_TIMEOUT = 300.0
_ABORT_GRACE_S = 0.5  # time for mpiexec to relay a failing rank's last words before the abort
_YIELD_SECONDS = 2e-4  # how long a wait polls between sched_yield calls before it naps
_PATIENT_SECONDS = 2e-2  # after this long, the naps grow ...
_FIRST_NAP, _LONGEST_NAP = 5e-5, 1e-3  # ... from 50 us to 1 ms
_SHM_ALIGN, _SHM_CHUNK = 64, 4 << 20  # cache-line aligned pieces of 4 MB windows


class DistributedTimeout(RuntimeError):
    """A collective did not complete in time: a rank is missing, stuck, or calls something else."""


class DistributedError(RuntimeError):
    """Ranks disagree (models, steps, shapes) in a way that would otherwise hang or corrupt."""


class World:
    """This process's view of the job: rank, size, node-local rank, the MPI communicator."""

    def __init__(self, comm: Any = None, mpi: Any = None, timeout: float = _DEFAULT_TIMEOUT):
        self.comm = comm
        self.MPI = mpi
        self.timeout = float(timeout)
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        self.local_rank = 0
        self.local_size = 1
        self.nccl: dict[int, Any] = {}  # device index -> backend.nccl.Communicator
        self.node = None  # the communicator of the ranks on this node, when that is all of them
        self._arenas: list[list] = []  # [window, its memory, bytes handed out], newest last
        if comm is not None and self.size > 1:
            # Ranks sharing a node's memory: ChainerMN gathered processor names for this; MPI-3
            # splits by shared memory directly.
            local = comm.Split_type(mpi.COMM_TYPE_SHARED, key=self.rank)
            self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
            if self.local_size == self.size:
                self.node = local  # one node: host buckets can be reduced in shared memory
            else:
                local.Free()

    # -- bounded waiting -----------------------------------------------------------------
    def wait(self, requests: list, what: str) -> None:
        """Wait for MPI requests, polling, for at most ``timeout`` seconds."""
        if not requests:
            return
        test = self.MPI.Request.Testall
        if not test(requests):
            self.wait_until(lambda: test(requests), what)

    def wait_until(self, ready, what: str) -> None:
        """Poll ``ready()`` (an MPI test, a CUDA event) for at most ``timeout`` seconds.

        MPICH advances a non-blocking collective only inside MPI calls, so the wait keeps
        polling, but between polls it gives the core away (two ranks may share one physical
        core's execution units, and other processes need the CPU too): ``sched_yield`` for the
        first 0.2 ms (the other rank is often microseconds away), then naps of 50 us (about
        as long as the kernel takes to wake a sleeper), growing to 1 ms once the wait has
        lasted 20 ms (a rank loading data or failing, not one a bucket behind).
        """
        if ready():
            return
        start = time.monotonic()
        nap = _FIRST_NAP
        while not ready():
            waited = time.monotonic() - start
            if waited < _YIELD_SECONDS:
                os.sched_yield()
                continue
            if waited > self.timeout:
                raise DistributedTimeout(self._timeout_message(what))
            time.sleep(nap)
            if waited > _PATIENT_SECONDS:
                nap = min(nap * 1.25, _LONGEST_NAP)

    # -- shared memory (one node) --------------------------------------------------------
    def shared_alloc(self, nbytes: int) -> tuple[Any, np.ndarray]:
        """``nbytes`` of memory shared by every rank (the same bytes on each): its MPI window
        and a uint8 array on it. Collective over the node: every rank asks for the same sizes
        in the same order. Windows are carved in chunks of at least 4 MB and never freed
        (``Win.Free`` is collective, which a garbage collector cannot promise); the operating
        system releases them at exit."""
        if self.node is None:
            raise DistributedError("shared memory needs every rank on one node")
        nbytes = -(-int(nbytes) // _SHM_ALIGN) * _SHM_ALIGN
        if not self._arenas or self._arenas[-1][2] + nbytes > self._arenas[-1][1].size:
            size = max(nbytes, _SHM_CHUNK)
            win = self.MPI.Win.Allocate_shared(size if self.rank == 0 else 0, 1, comm=self.node)
            buf, _ = win.Shared_query(0)
            win.Lock_all(self.MPI.MODE_NOCHECK)  # a passive epoch, for Win.Sync's memory fence
            self._arenas.append([win, np.frombuffer(buf, dtype=np.uint8, count=size), 0])
        entry = self._arenas[-1]
        win, arena, used = entry
        entry[2] = used + nbytes
        return win, arena[used:used + nbytes]

    def shared_barrier_start(self, win: Any) -> Any:
        """Publish this rank's writes to ``win``'s memory and start meeting the other ranks."""
        win.Sync()
        return self.node.Ibarrier()

    def shared_barrier_wait(self, win: Any, request: Any, what: str) -> None:
        """Wait until every rank reached ``shared_barrier_start``; their writes are visible."""
        self.wait([request], what)
        win.Sync()

    def _timeout_message(self, what: str) -> str:
        return (f"{what}: rank {self.rank} of {self.size} waited {self.timeout:g} s for the other "
                "ranks; one of them is stuck, has failed, or is calling a different collective "
                "(every rank must make the same calls in the same order). Set "
                "GPUGRAD_DIST_TIMEOUT (seconds) to wait longer.")

    def nccl_communicator(self, device_index: int):
        """This rank's NCCL communicator on its GPU, built on first use (collective: all ranks)."""
        comm = self.nccl.get(device_index)
        if comm is None:
            from ..backend import nccl

            uid = nccl.unique_id() if self.rank == 0 else np.zeros(128, dtype=np.uint8)
            self.wait([self.comm.Ibcast(uid, root=0)], "NCCL bootstrap (broadcast of the id)")
            comm = self.nccl[device_index] = nccl.Communicator(device_index, self.size,
                                                               self.rank, uid)
        return comm


_world: World | None = None


def launched_size() -> int:
    """The world size the launcher announced in the environment (1 when not under mpiexec)."""
    for var in _SIZE_VARS:
        value = os.environ.get(var)
        if value and value.isdigit():
            return int(value)
    return 1


def init(timeout: float | None = None) -> World:
    """Join the MPI world if launched by ``mpiexec`` (idempotent); returns the world.

    ``timeout`` bounds every wait in a collective (default ``GPUGRAD_DIST_TIMEOUT`` or 300 s).
    """
    global _world
    if timeout is None:
        timeout = float(os.environ.get("GPUGRAD_DIST_TIMEOUT", _DEFAULT_TIMEOUT))
    if timeout <= 0:
        raise ValueError(f"distributed.init: timeout must be positive seconds, got {timeout!r}")
    if _world is not None:
        _world.timeout = float(timeout)
        return _world
    size = launched_size()
    if size <= 1:
        _world = World(timeout=timeout)
        return _world
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise RuntimeError(
            f"distributed.init: launched by mpiexec with {size} ranks, but mpi4py cannot be "
            f"imported ({exc}); install it with pip install 'gpugrad[mpi]' (each rank would "
            "otherwise train alone and write the same files)") from exc
    if not MPI.Is_initialized():  # imported earlier with mpi4py.rc.initialize = False
        MPI.Init()
        atexit.register(lambda: MPI.Is_finalized() or MPI.Finalize())
    _world = World(MPI.COMM_WORLD, MPI, timeout)
    if _world.size > 1:
        _install_excepthook(_world)
    return _world


def mpi_info() -> dict[str, Any]:
    """mpi4py's and the MPI library's versions, without starting MPI: for ``gpugrad info``."""
    try:
        import mpi4py
    except ImportError as exc:
        return {"available": False, "reason": f"mpi4py is not installed ({exc}); "
                "pip install 'gpugrad[mpi]'"}
    if "mpi4py.MPI" not in sys.modules:
        mpi4py.rc.initialize = False  # only asking for versions; init() starts MPI when needed
    try:
        from mpi4py import MPI
    except Exception as exc:  # mpi4py without a loadable MPI library
        return {"available": False, "reason": f"mpi4py cannot load an MPI library ({exc})"}
    return {"available": True, "mpi4py": mpi4py.__version__,
            "library": " ".join(MPI.Get_library_version().splitlines()[0].split()),
            "standard": "{}.{}".format(*MPI.Get_version())}


def world() -> World:
    """The world, joined on first use."""
    return _world if _world is not None else init()


def _install_excepthook(w: World) -> None:
    def abort_all(exc_type, exc, tb) -> None:
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        sys.stderr.write(f"[gpugrad rank {w.rank} of {w.size}] failed; aborting all ranks:\n"
                         f"{text}")
        sys.stderr.flush()
        # mpiexec relays each rank's stderr through its proxies, and an abort tears them down
        # at once: without a pause the message above is often lost, and the job fails silently.
        time.sleep(_ABORT_GRACE_S)
        for comm in w.nccl.values():  # NCCL kernels waiting for this rank would spin forever
            try:
                comm.abort()
            except Exception:
                pass
        w.MPI.COMM_WORLD.Abort(1)

    sys.excepthook = abort_all


def rank() -> int:
    """This process's rank, 0 .. world_size()-1."""
    return world().rank


def world_size() -> int:
    """The number of processes (1 when not launched by mpiexec)."""
    return world().size


def local_rank() -> int:
    """This process's rank among those on the same node: the GPU it uses (``cuda:<local_rank>``)."""
    return world().local_rank


def is_main() -> bool:
    """True on rank 0, the rank that prints, logs and writes files."""
    return world().rank == 0


def barrier() -> None:
    """Wait until every rank arrives here (bounded by the timeout)."""
    w = world()
    if w.size > 1:
        w.wait([w.comm.Ibarrier()], "barrier")
