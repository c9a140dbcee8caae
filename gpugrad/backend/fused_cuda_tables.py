"""Device pointer tables for the fused optimizer kernels (``kernels/optimizers.cu``).

One launch updates every tensor of a dtype group: a table holds each tensor's parameter and state
addresses (``tab``, K x S int64), the gradient addresses (``gtab``, K), the lengths (``sizes``, K)
and the block map (``blocks``, B x 2: block b -> tensor k, first element), every tensor cut into
``CHUNK``-element blocks. Tables are cached (the last 32) by the arrays' addresses and sizes, so a
training loop uploads them once; ``gtab`` is re-uploaded only when the gradient arrays change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import cupy
import numpy as np

CHUNK = 2048  # elements per optimizer block; multiple of 8, so packs stay 16-byte aligned


class Table:
    __slots__ = ("tab", "sizes", "blocks", "nblocks", "gkey", "gtab")

    def __init__(self, tab, sizes, blocks, nblocks: int) -> None:
        self.tab, self.sizes, self.blocks, self.nblocks = tab, sizes, blocks, nblocks
        self.gkey: tuple | None = None
        self.gtab = None


_tables: OrderedDict[tuple, Table] = OrderedDict()
_tables_lock = threading.Lock()
_MAX_TABLES = 32


def static_table(kind: str, dev_id: int, sfx: str, columns: list[list]) -> Table:
    """Table of parameter/state pointers, sizes and the block map, cached by their addresses."""
    ptrs = tuple(tuple(0 if a is None else a.data.ptr for a in col) for col in columns)
    sizes = tuple(a.size for a in columns[0])
    key = (kind, dev_id, sfx, ptrs, sizes)
    with _tables_lock:
        entry = _tables.get(key)
        if entry is not None:
            _tables.move_to_end(key)
            return entry
    for col in columns:
        for a in col:
            if a is not None and a.device.id != dev_id:
                raise ValueError(f"{kind}: arrays on cuda:{a.device.id} and cuda:{dev_id}")
    sizes_np = np.asarray(sizes, dtype=np.int64)
    per = -(-sizes_np // CHUNK)
    nblocks = int(per.sum())
    if nblocks > 2**31 - 1:
        raise ValueError(f"{kind}: {sizes_np.sum()} elements is too many for one launch")
    first = np.repeat(np.cumsum(per) - per, per)
    block_map = np.empty((nblocks, 2), dtype=np.int64)
    block_map[:, 0] = np.repeat(np.arange(len(sizes), dtype=np.int64), per)
    block_map[:, 1] = (np.arange(nblocks, dtype=np.int64) - first) * CHUNK
    tab = np.asarray(ptrs, dtype=np.uint64).T.copy().view(np.int64)  # (K, S) row-major
    entry = Table(cupy.asarray(tab), cupy.asarray(sizes_np), cupy.asarray(block_map), nblocks)
    with _tables_lock:
        _tables[key] = entry
        while len(_tables) > _MAX_TABLES:
            _tables.popitem(last=False)
    return entry


def grad_table(entry: Table, grads: list, dev_id: int, op: str):
    gkey = tuple(g.data.ptr for g in grads)
    if entry.gkey != gkey:
        for i, g in enumerate(grads):
            if g.device.id != dev_id:
                raise ValueError(f"{op}: grad {i} is on cuda:{g.device.id}, params on {dev_id}")
        entry.gtab = cupy.asarray(np.asarray(gkey, dtype=np.uint64).view(np.int64))
        entry.gkey = gkey
    return entry.gtab
