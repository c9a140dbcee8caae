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
        if comm is not None and self.size > 1:
            # Ranks sharing a node's memory: ChainerMN gathered processor names for this; MPI-3
            # splits by shared memory directly.
            local = comm.Split_type(mpi.COMM_TYPE_SHARED, key=self.rank)
            self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
            local.Free()

    # -- bounded waiting -----------------------------------------------------------------
    def wait(self, requests: list, what: str) -> None:
        """Wait for MPI requests, polling, for at most ``timeout`` seconds."""
        if not requests:
            return
        test = self.MPI.Request.Testall
        if test(requests):
            return
        deadline = time.monotonic() + self.timeout
        spins = 0
        while not test(requests):
            spins += 1
            if spins > 200:  # a busy wait first (microsecond collectives), then yield the core
                time.sleep(min(1e-3, 1e-6 * spins))
                if time.monotonic() > deadline:
                    raise DistributedTimeout(self._timeout_message(what))

    def wait_until(self, ready, what: str) -> None:
        """Poll ``ready()`` (e.g. a CUDA event) for at most ``timeout`` seconds."""
        deadline = time.monotonic() + self.timeout
        spins = 0
        while not ready():
            spins += 1
            if spins > 200:
                time.sleep(min(1e-3, 1e-6 * spins))
                if time.monotonic() > deadline:
                    raise DistributedTimeout(self._timeout_message(what))

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
