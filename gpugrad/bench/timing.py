"""Honest timing for the benchmarks: warm-up, calibrated inner loops, medians with spread, and GPU
timing with CUDA events (after a synchronize), with the cold first call reported apart.

Nothing here imports cupy: CUDA events come from the device's array module (``device.xp`` *is*
the cupy module on a CUDA device), so only ``gpugrad.backend`` ever imports it.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Measurement", "Timer", "measure", "summarize"]


@dataclass
class Measurement:
    """Seconds per call of one workload: median and spread over ``repeats`` timed batches."""

    median_s: float
    q1_s: float
    q3_s: float
    min_s: float
    max_s: float
    repeats: int
    inner: int  # calls per timed batch (tiny ops are batched so the clock's resolution is moot)
    first_call_s: float  # the cold first call: kernel compilation, allocator growth, caches
    clock: str  # "perf_counter" or "cuda_events"
    samples_s: list[float] = field(default_factory=list, repr=False)

    @property
    def iqr_s(self) -> float:
        return self.q3_s - self.q1_s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("samples_s")
        d["iqr_s"] = self.iqr_s
        return d


def summarize(samples: list[float], inner: int, first_call_s: float, clock: str) -> Measurement:
    """Median and quartiles of per-call times (``samples`` already divided by ``inner``)."""
    s = sorted(samples)
    if len(s) >= 2:
        q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive")
    else:
        q1 = q3 = s[0]
    return Measurement(
        median_s=statistics.median(s), q1_s=q1, q3_s=q3, min_s=s[0], max_s=s[-1],
        repeats=len(s), inner=inner, first_call_s=first_call_s, clock=clock, samples_s=s,
    )


class Timer:
    """Times ``inner`` calls of a function on one device.

    ``kind`` is ``"cpu"`` (``time.perf_counter``; the work is synchronous), ``"cuda"`` (events on
    the current stream, bracketed by synchronizes so no earlier work leaks into the interval and
    all of ours is inside it) or ``"sync"`` (wall clock around a ``sync()`` callable, for
    frameworks such as PyTorch on CUDA when we do not want its event API).
    """

    def __init__(self, kind: str = "cpu", xp: Any = None,
                 sync: Callable[[], None] | None = None,
                 context: Callable[[], Any] | None = None) -> None:
        if kind == "cuda" and xp is None:
            raise ValueError("Timer: kind='cuda' needs the cupy module (device.xp)")
        self.kind = kind
        self.xp = xp
        self.sync = sync or (lambda: None)
        self.context = context  # makes the timed GPU current, so events land on its stream

    @classmethod
    def for_device(cls, device: Any) -> Timer:
        """The right timer for a ``gg.Device``: events on CUDA, the wall clock on CPU."""
        if getattr(device, "type", "cpu") == "cuda":
            return cls("cuda", xp=device.xp, sync=device.synchronize,
                       context=getattr(device.backend, "use", None))
        return cls("cpu")

    @property
    def clock(self) -> str:
        return "cuda_events" if self.kind == "cuda" else "perf_counter"

    def __call__(self, fn: Callable[[], Any], inner: int = 1) -> float:
        """Seconds taken by ``inner`` back-to-back calls of ``fn``."""
        if self.kind == "cuda":
            with self.context() if self.context else contextlib.nullcontext():
                cuda = self.xp.cuda
                start, end = cuda.Event(), cuda.Event()
                self.sync()
                start.record()
                for _ in range(inner):
                    fn()
                end.record()
                end.synchronize()
                return cuda.get_elapsed_time(start, end) / 1e3  # milliseconds -> seconds
        self.sync()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        self.sync()
        return time.perf_counter() - t0


def measure(
    fn: Callable[[], Any],
    timer: Timer | None = None,
    *,
    warmup: int = 3,
    repeats: int = 15,
    min_batch_s: float = 2e-3,
    max_total_s: float = 10.0,
) -> Measurement:
    """Time ``fn``: one cold call (reported apart), ``warmup`` calls, then ``repeats`` batches.

    The inner loop count is chosen so one batch lasts at least ``min_batch_s``: per-call times of
    microsecond ops are then averages over many calls, not clock noise. ``repeats`` shrinks (to
    no fewer than 3) when the workload is slow enough that ``max_total_s`` would be exceeded.
    """
    timer = timer or Timer()
    first = timer(fn, 1)
    for _ in range(max(0, warmup)):
        timer(fn, 1)
    # Calibrate on the fastest of three calls: one call slowed by a preempted BLAS thread would
    # otherwise set inner=1 and leave microsecond ops at the clock's mercy.
    one = max(min(timer(fn, 1) for _ in range(3)), 1e-9)
    inner = max(1, math.ceil(min_batch_s / one))
    repeats = max(3, min(repeats, int(max_total_s / (one * inner)) or 1))
    samples = [timer(fn, inner) / inner for _ in range(repeats)]
    return summarize(samples, inner, first, timer.clock)
