"""``DataParallel``: one model replica per rank, gradients averaged after every backward.

At wrap time every rank describes its model (parameter and buffer names, shapes, dtypes,
devices); the descriptions are gathered, so a mismatch is the same clear error on every rank
instead of a hang. Then rank 0's parameters and buffers are broadcast.

Gradients travel in *buckets*: flat buffers of a few MB (one device and dtype each), filled in the
reverse order of ``named_parameters()`` -- the order backward produces them. A post-accumulate
hook on each parameter counts it in; when a bucket's last gradient is in, its all-reduce starts
(in bucket order, so every rank issues the same sequence) while backward carries on. When the walk
ends, the remaining buckets start (a parameter without a gradient counts as zero) and one small
host all-reduce compares the ranks' step counters and model signatures, which catches a rank that
skipped or added a backward. The sums are divided by the world size and written back into each
``.grad``, so any optimizer, clipping or scaler that runs afterwards sees the average.

When every rank is on one node, host buckets live in an MPI-3 shared-memory window instead
(``shm.py``): a bucket is packed into this rank's slot, and "starting" it means entering a
barrier; after the walk each rank sums its slice of all slots. Under ``gg.compile`` the walk
fires no hooks: the program records ``_average_gradients`` (every bucket, after the walk) as
one step instead.
"""

from __future__ import annotations

import contextlib
import json
import time
import weakref
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..autograd import register_backward_done_callback, register_post_accumulate_grad_hook
from ..nn import Module
from ..tensor import Tensor
from . import shm
from .collectives import start_all_reduce, start_broadcast
from .runtime import DistributedError, World, world

_SIG_MOD = 1 << 20  # signatures and step counters stay small: their squares sum exactly in int64


class _Bucket:
    __slots__ = ("device", "dtype", "positions", "offsets", "flat", "finish", "dirty", "shm",
                 "homes")

    def __init__(self, device: Any, dtype: np.dtype) -> None:
        self.device, self.dtype = device, dtype
        self.positions: list[int] = []
        self.offsets: list[int] = [0]
        self.flat = None
        self.finish = None
        self.shm: shm.SharedReduce | None = None  # host buckets when every rank is on one node
        self.dirty = 0
        # per parameter: weak references to the views of ``flat`` offered as its .grad's storage
        # (one per compiled program: a retrace, for the last short batch, gets its own)
        self.homes: list[list[weakref.ref]] = []

    @property
    def numel(self) -> int:
        return self.offsets[-1]


class DataParallel(Module):
    """Wrap ``module`` so that, across ``mpiexec`` ranks, gradients are averaged after backward.

    Move the model to its device (``cuda:<local_rank>`` on GPUs) before wrapping. Every rank
    must call forward and backward the same number of times; ``bucket_cap_mb`` bounds one
    all-reduce's size. With one rank it only forwards to ``module``. ``state_dict()`` is the
    module's own. ``comm_stats`` counts the all-reduce calls and bytes, the bytes copied from
    ``.grad``s into buckets (``packed_bytes``), the backward passes averaged (``steps``) and the
    seconds spent finishing them after backward.

    ``gradient_as_bucket_view=True`` (as in torch's DDP) lets a ``.grad`` be a view of this rank's
    part of a bucket, saving copies: after an eager backward the averaged ``.grad``s are views of
    the bucket the average came back in (no copy back), and a ``gg.compile``'d backward (host
    buckets) writes each gradient straight where it is summed (no copy there either). The price
    is torch's too: a ``.grad`` kept from one step is overwritten by a later step.
    """

    def __init__(self, module: Module, bucket_cap_mb: float = 4.0,
                 gradient_as_bucket_view: bool = False) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"DataParallel: expected a gg.nn.Module, got {type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"DataParallel: bucket_cap_mb must be positive, got {bucket_cap_mb!r}")
        super().__init__()
        self.module = module
        self.comm_stats = {"calls": 0, "bytes": 0, "packed_bytes": 0, "wait_seconds": 0.0,
                           "steps": 0}
        self._sync = True
        self._bucket_views = bool(gradient_as_bucket_view)
        w = self._world = world()
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self._params = [p for _, p in named]
        self._buckets = self._make_buckets(int(bucket_cap_mb * 2**20))
        if w.size == 1:
            return
        # the bucket layout and the shared-memory choice too: the windows are allocated
        # collectively, so ranks that disagree must fail here rather than hang in MPI
        use_shm = w.node is not None and shm.enabled()
        description = _describe(named, list(module.named_buffers()), [
            ["bucket sizes", [b.numel for b in self._buckets]],
            ["shared memory (GPUGRAD_DIST_SHM)", use_shm]])
        _check_same_everywhere(w, description)
        self._signature = zlib.crc32(description.encode()) % _SIG_MOD
        if use_shm:
            for i, b in enumerate(self._buckets):
                if b.device.type == "cpu":  # packed straight into this rank's shared slot
                    b.shm = shm.SharedReduce(w, b.numel, b.dtype, f"DataParallel: gradient "
                                             f"bucket {i} (shared memory)")
                    b.flat = b.shm.slot
        self._shared = [b.shm for b in self._buckets if b.shm is not None]
        self._broadcast_state(module)
        self._index = {id(p): i for i, p in enumerate(self._params)}
        self._bucket_of = [0] * len(self._params)
        for bi, b in enumerate(self._buckets):
            for pos in b.positions:
                self._bucket_of[pos] = bi
        self._reset_step()
        self._step = 0
        ref = weakref.ref(self)

        def on_grad(p: Tensor) -> None:
            dp = ref()
            if dp is not None:
                dp._on_grad(p)

        def on_done() -> None:
            dp = ref()
            if dp is not None:
                dp._finish_step(adopt=dp._bucket_views)

        def compile_step(written: set[int]) -> Any:
            """Under gg.compile the walk fires no hooks: the program records the whole average
            as one step after the walk, reading the .grads it wrote."""
            dp = ref()
            if dp is None or not any(id(p) in written for p in dp._params):
                return None
            return dp._average_gradients

        def grad_buffer(p: Tensor) -> Any:
            dp = ref()
            return None if dp is None else dp._grad_buffer(p)

        on_grad.replayed_by_callback = True  # type: ignore[attr-defined]
        on_grad.grad_buffer = grad_buffer  # type: ignore[attr-defined]
        on_done.compile_step = compile_step  # type: ignore[attr-defined]
        handles = [register_post_accumulate_grad_hook(p, on_grad) for p in self._params]
        handles.append(register_backward_done_callback(on_done))
        weakref.finalize(self, lambda hs=tuple(handles): [h.remove() for h in hs])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._world.size > 1 and self._active:
            raise DistributedError("DataParallel: the previous backward did not finish (it "
                                   "raised?), so its gradient all-reduces are incomplete")
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward passes inside only accumulate this rank's gradients; the first backward
        after it averages everything accumulated (gradient accumulation over micro-batches
        with one all-reduce per step, like torch's ``no_sync``)."""
        previous, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = previous

    def state_dict(self) -> Any:
        """The wrapped module's (no ``module.`` prefix): checkpoints load with or without the
        wrapper, and with any number of ranks."""
        return self.module.state_dict()

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> Any:
        return self.module.load_state_dict(state_dict, strict)

    # -- set-up ---------------------------------------------------------------------------
    def _make_buckets(self, cap_bytes: int) -> list[_Bucket]:
        buckets: list[_Bucket] = []
        for pos in reversed(range(len(self._params))):  # backward produces the last layers first
            p = self._params[pos]
            b = buckets[-1] if buckets else None
            if (b is None or b.device is not p.device or b.dtype != p.dtype
                    or (b.numel + p.size) * p.dtype.itemsize > cap_bytes and b.positions):
                b = _Bucket(p.device, p.dtype)
                buckets.append(b)
            b.positions.append(pos)
            b.offsets.append(b.numel + p.size)
            b.homes.append([])
        for b in buckets:
            with b.device.activate():
                b.flat = b.device.xp.empty(b.numel, dtype=b.dtype)
        return buckets

    def _broadcast_state(self, module: Module) -> None:
        w = self._world
        for i, b in enumerate(self._buckets):
            self._pack(b, lambda p: p.data)
            start_broadcast(w, b.device, b.flat, 0, f"DataParallel: broadcast of bucket {i}")()
            with b.device.activate():
                for pos, lo, hi in zip(b.positions, b.offsets, b.offsets[1:]):
                    p = self._params[pos]
                    p.data[...] = b.flat[lo:hi].reshape(p.shape)
        for name, t in list(module.named_buffers()) + [
                (n, p) for n, p in module.named_parameters() if not p.requires_grad]:
            with t.device.activate():
                data = t.device.xp.ascontiguousarray(t.data).copy()
                start_broadcast(w, t.device, data, 0, f"DataParallel: broadcast of {name}")()
                t.data[...] = data

    def _grad_buffer(self, p: Tensor) -> Any:
        """With ``gradient_as_bucket_view``: ``p``'s part of this rank's host bucket (its slot of
        the shared-memory window, or the buffer MPI reduces in place), offered to gg.compile as
        the storage of ``p.grad``; a compiled backward then writes the gradient where it is
        summed. Only a weak reference is kept (the program checks that it alone holds the array
        before writing into it)."""
        pos = self._index.get(id(p)) if self._bucket_views else None
        b = None if pos is None else self._buckets[self._bucket_of[pos]]
        if b is None or b.device.type != "cpu":  # lowered (out=) steps are the CPU's only
            return None
        k = b.positions.index(pos)
        view = b.flat[b.offsets[k]:b.offsets[k + 1]].reshape(p.shape)
        b.homes[k] = [r for r in b.homes[k] if r() is not None] + [weakref.ref(view)]
        return view

    def _pack(self, b: _Bucket, get) -> int:
        """Copy ``get(param)`` of each of ``b``'s parameters into ``b.flat``; returns the bytes
        copied."""
        copied = 0
        with b.device.activate():
            for pos, lo, hi, home in zip(b.positions, b.offsets, b.offsets[1:], b.homes):
                value = get(self._params[pos])
                if value is None:
                    b.flat[lo:hi] = 0  # no gradient on this rank: it adds nothing to the sum
                elif not _is_one_of(value, home):  # else it is in place already
                    b.flat[lo:hi] = value.reshape(-1)
                    copied += value.nbytes
        return copied

    # -- one step -------------------------------------------------------------------------
    def _reset_step(self) -> None:
        self._active = False
        self._ready = [False] * len(self._params)
        self._pending = [len(b.positions) for b in self._buckets]
        self._next = 0  # the next bucket to start: buckets start in order on every rank
        for b in self._buckets:
            b.finish, b.dirty = None, 0

    def _on_grad(self, p: Tensor) -> None:
        if not self._sync:
            return
        self._active = True
        pos = self._index[id(p)]
        bi = self._bucket_of[pos]
        if self._ready[pos]:  # reached again (a shared weight): its bucket may be on its way
            if self._buckets[bi].finish is not None:
                self._buckets[bi].dirty = 1
            return
        self._ready[pos] = True
        self._pending[bi] -= 1
        while self._next < len(self._buckets) and self._pending[self._next] == 0:
            self._start(self._next)
            self._next += 1

    def _start(self, bi: int) -> None:
        b = self._buckets[bi]
        self.comm_stats["packed_bytes"] += self._pack(
            b, lambda p: None if p.grad is None else p.grad.data)
        self.comm_stats["calls"] += 1
        self.comm_stats["bytes"] += b.flat.nbytes
        if b.shm is not None:
            b.finish = b.shm.start(divide_by=self._world.size)
            return
        b.finish = start_all_reduce(self._world, b.device, b.flat, "sum",
                                    f"DataParallel: gradient bucket {bi} of backward "
                                    f"#{self._step}")

    def _average_gradients(self) -> None:
        """Average every bucket from the current ``.grad`` values at once (no overlap with the
        walk): the recorded step of a compiled backward."""
        if self._sync:
            self._active = True
            self._finish_step()

    def _finish_step(self, adopt: bool = False) -> None:
        """Finish the step's all-reduces and write the averages into the ``.grad``s. ``adopt``
        (an eager backward with ``gradient_as_bucket_view``): the ``.grad``s become views of
        the averaged buckets instead of copies. Not in a compiled step: there the program's
        ``.grad`` buffers already are views of the host buckets, or stay its own."""
        if not self._active:
            return  # a backward that reached none of this model's parameters
        w = self._world
        t0 = time.perf_counter()
        try:
            for bi in range(self._next, len(self._buckets)):
                self._start(bi)
            s, sig = self._step % _SIG_MOD, self._signature
            meta = np.array([1, s, s * s, sig, sig * sig, *(b.dirty for b in self._buckets)],
                            dtype=np.int64)
            req = w.comm.Iallreduce(w.MPI.IN_PLACE, meta, op=w.MPI.SUM)
            self.comm_stats["calls"] += 1
            self.comm_stats["bytes"] += meta.nbytes
            for b in self._buckets:
                b.finish()
            what = f"DataParallel: backward #{self._step}"
            shm.sync(self._shared, what)
            w.wait([req], f"DataParallel: step check of backward #{self._step}")
            self.comm_stats["wait_seconds"] += time.perf_counter() - t0
            self._check_step(meta)
            resent = [bi for bi, b in enumerate(self._buckets) if b.dirty]
            for bi in resent:  # a gradient grew after its bucket left: the complete one again
                self._start(bi)
                self._buckets[bi].finish()
            resent = [self._buckets[bi] for bi in resent]
            shm.sync([b.shm for b in resent if b.shm is not None], what)
            for b in self._buckets:
                self._write_back(b, w.size, adopt)
        finally:
            self._reset_step()
        self._step += 1
        self.comm_stats["steps"] += 1

    def _check_step(self, meta: np.ndarray) -> None:
        """Same step and model on every rank (sums of x and x*x match only if all x agree), and
        which buckets some rank must resend. Checked before any average is written."""
        w, n = self._world, self._world.size
        if meta[0] != n or meta[1] ** 2 != n * meta[2] or meta[3] ** 2 != n * meta[4]:
            raise DistributedError(
                f"DataParallel: ranks are out of step: rank {w.rank} is at backward "
                f"#{self._step} of a model with signature {self._signature}, but the ranks' step "
                "counters or models differ (a rank skipped or added a backward, or wrapped a "
                "different model); every rank must run the same number of backward passes")
        for b, total in zip(self._buckets, meta[5:]):
            b.dirty = int(total > 0)

    def _write_back(self, b: _Bucket, n: int, adopt: bool) -> None:
        """Each ``.grad`` = its part of the summed bucket / ``n`` (the sum of per-rank means is
        the mean over the global batch). A shared-memory bucket comes back averaged, in this
        rank's slot; an MPI or NCCL sum is divided on its way into each ``.grad`` (the pass that
        writes it anyway) or, with ``adopt``, in place, once. With ``adopt`` the ``.grad``s
        become views of the averaged bucket; one that is a view of it already holds its
        average."""
        with b.device.activate():
            xp = b.device.xp
            averaged = b.shm is not None
            if adopt and not averaged:
                xp.true_divide(b.flat, n, out=b.flat)
                averaged = True
            for pos, lo, hi, home in zip(b.positions, b.offsets, b.offsets[1:], b.homes):
                p = self._params[pos]
                part = b.flat[lo:hi].reshape(p.shape)
                g = p.grad
                if not averaged:  # a bucket view (a compiled .grad) is divided in place
                    if g is None:
                        p.grad = Tensor._wrap(xp.true_divide(part, n), p.device)
                    else:
                        xp.true_divide(part, n, out=g.data)
                elif g is None:
                    p.grad = Tensor._wrap(part if adopt else part.copy(), p.device)
                elif _is_one_of(g.data, home):
                    continue
                elif adopt and g.data.dtype == part.dtype:
                    g.data = part  # the view: the next step's gradient is copied over it
                else:
                    g.data[...] = part


def _is_one_of(array: Any, refs: list[weakref.ref]) -> bool:
    return any(r() is array for r in refs)


def _describe(named_params: list, named_buffers: list, settings: list) -> str:
    entries = [["param", n, list(p.shape), str(p.dtype), p.device.type] for n, p in named_params]
    entries += [["buffer", n, list(t.shape), str(t.dtype), t.device.type]
                for n, t in named_buffers]
    return json.dumps(entries + settings)


def _check_same_everywhere(w: World, description: str) -> None:
    """Gather every rank's model description; all ranks raise the same error on a mismatch."""
    mine = np.frombuffer(description.encode(), dtype=np.uint8)
    lengths = np.zeros(w.size, dtype=np.int64)
    w.wait([w.comm.Iallgather(np.array([mine.size], dtype=np.int64), lengths)],
           "DataParallel: model check")
    padded = np.zeros(int(lengths.max()), dtype=np.uint8)
    padded[:mine.size] = mine
    everyone = np.zeros((w.size, padded.size), dtype=np.uint8)
    w.wait([w.comm.Iallgather(padded, everyone)], "DataParallel: model check")
    models = [json.loads(everyone[r, :lengths[r]].tobytes().decode()) for r in range(w.size)]
    for r, model in enumerate(models[1:], start=1):
        if model == models[0]:
            continue
        diff = next((f"{a} on rank 0 but {b} on rank {r}" for a, b in zip(models[0], model)
                     if a != b), None)
        if diff is None:
            diff = f"{len(models[0])} tensors on rank 0 but {len(model)} on rank {r}"
        raise DistributedError(
            f"DataParallel: the ranks' models differ ({diff}); every rank must build the same "
            "model (names, shapes, dtypes, device type) and wrap it alike (bucket_cap_mb, "
            "GPUGRAD_DIST_SHM)")
