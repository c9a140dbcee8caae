"""Data-parallel training across processes: MPI (mpi4py) for ranks and host arrays, NCCL for GPUs.

Launch with ``mpiexec -n N python script.py``; outside ``mpiexec`` everything here is a
single-rank no-op, so the same script runs alone. See the README, "Multiple processes and GPUs".
"""

from .collectives import all_gather, all_reduce, broadcast, gpu_transport
from .data_parallel import DataParallel
from .runtime import (
    DistributedError,
    DistributedTimeout,
    barrier,
    init,
    is_main,
    launched_size,
    local_rank,
    mpi_info,
    rank,
    world,
    world_size,
)

__all__ = [
    "DataParallel",
    "DistributedError",
    "DistributedTimeout",
    "all_gather",
    "all_reduce",
    "barrier",
    "broadcast",
    "gpu_transport",
    "init",
    "is_main",
    "launched_size",
    "local_rank",
    "mpi_info",
    "rank",
    "world",
    "world_size",
]
