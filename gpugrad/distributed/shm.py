"""Intra-node all-reduce of host buffers through an MPI-3 shared-memory window.

When every rank runs on one node, MPI's all-reduce of a few MB costs several rounds of message
passing that only advance inside MPI calls. Here the ranks share one window
(``MPI.Win.Allocate_shared`` on the ``COMM_TYPE_SHARED`` communicator) instead: each rank writes
its buffer into its own *slot*, the ranks meet at a barrier, and each rank reduces a 1/N slice:
it sums that slice of all slots in rank order (``slot0 + slot1 + ...``, so the result is
bitwise the same on every rank and, for two ranks, the same as MPI's ``a + b``), divides, and
writes the result into that slice of every slot. After a second barrier each rank's own slot
holds the whole result -- where a ``gg.compile``'d backward wrote its gradients
(``DataParallel(gradient_as_bucket_view=True)``), so they are averaged in place. Only the
barriers are MPI calls; the reducing is each rank's own plain NumPy work on its own core, on a
slice no other rank touches between the barriers.

Windows are never freed (``MPI_Win_free`` is collective, and a garbage collector would call it
at a different moment on each rank): ``World.shared_alloc`` carves pieces out of a few windows
and the operating system releases them at exit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np


def enabled() -> bool:
    """Shared memory is used for host buckets unless ``GPUGRAD_DIST_SHM=0`` (then MPI)."""
    return os.environ.get("GPUGRAD_DIST_SHM", "1") != "0"


class SharedReduce:
    """One buffer of ``numel`` elements of ``dtype`` reduced over ranks: summed, then divided.

    ``slot`` is this rank's buffer: write it, ``start()``, and once every rank's ``finish`` has
    returned (``sync()`` waits for that) it holds the result, until this rank writes it again.
    No other rank writes it before this rank's next ``start()``.
    """

    def __init__(self, world: Any, numel: int, dtype: np.dtype, what: str) -> None:
        self.world, self.what = world, what
        n, rank = world.size, world.rank
        dtype = np.dtype(dtype)
        # n slots, each on its own cache lines (the window is 64-byte aligned)
        slot_bytes = -(-numel * dtype.itemsize // 64) * 64
        self.win, memory = world.shared_alloc(slot_bytes * n)  # collective
        self.slots = [memory[i * slot_bytes:i * slot_bytes + numel * dtype.itemsize].view(dtype)
                      for i in range(n)]
        self.slot = self.slots[rank]
        self.lo, self.hi = rank * numel // n, (rank + 1) * numel // n  # this rank's slice

    def start(self, divide_by: int = 1) -> Callable[[], None]:
        """This rank's slot is written: meet the others, then reduce this rank's slice. Returns
        the function that waits for the barrier and reduces."""
        arrived = self.world.shared_barrier_start(self.win)
        lo, hi, slots = self.lo, self.hi, self.slots

        def finish() -> None:
            self.world.shared_barrier_wait(self.win, arrived, self.what)
            if hi > lo:
                total = slots[0][lo:hi]  # summed in place: this slice is this rank's alone now
                for s in slots[1:]:
                    total += s[lo:hi]
                if divide_by != 1:
                    total /= divide_by
                for s in slots[1:]:
                    s[lo:hi] = total

        return finish


def sync(reducers: list[SharedReduce], what: str) -> None:
    """Wait until every rank has summed its slices of ``reducers``: their results are complete
    (one barrier for all of them, with memory fences on each window)."""
    if not reducers:
        return
    w = reducers[0].world
    windows = list({id(r.win): r.win for r in reducers}.values())
    for win in windows[1:]:
        win.Sync()
    arrived = w.shared_barrier_start(windows[0])
    w.shared_barrier_wait(windows[0], arrived, what)
    for win in windows[1:]:
        win.Sync()
