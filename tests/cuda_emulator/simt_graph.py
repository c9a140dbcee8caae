"""Stream capture for the CuPy stand-in (``simt_cupy``): CuPy 14's ``Stream.begin_capture`` /
``end_capture`` -> ``Graph.launch`` as the CUDA driver does them.

While a stream captures, device work is recorded, not run: each kernel launch (with its
arguments as they were then -- a Python float is baked in, an array is its address), each
elementwise/reduction call, copy, fill and indexed read or write. An array a recorded call
returns is allocated then and filled with NaN bytes (as uninitialised device memory: nothing ran
yet). ``Graph.launch`` runs the recorded calls in order, reading and writing the same memory.
As real CuPy does during capture, cuBLAS (``matmul``) raises ``NotImplementedError`` and host
transfers (``asnumpy``/``.get()``, ``asarray`` of host data) raise ``RuntimeError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np

_capture: list[Callable[[], None]] | None = None
#: graphs launched so far (tests count them)
graph_launches = 0


def capturing() -> bool:
    return _capture is not None


def record(call: Callable[[], None]) -> None:
    _capture.append(call)


def refuse_transfer(what: str) -> None:
    if _capture is not None:
        raise RuntimeError(f"the current stream is capturing, so {what} are disallowed")


def refuse_cublas() -> None:
    if _capture is not None:
        raise NotImplementedError("calling cuBLAS API during stream capture is currently "
                                  "unsupported")


def poison(a) -> None:
    """Uninitialised memory: NaN bytes (an array a capture allocated has no value yet)."""
    if isinstance(a, np.ndarray) and a.size and a.flags.c_contiguous:
        np.ndarray.view(a, np.ndarray).reshape(-1).view(np.uint8)[:] = 0xFF


class Event:
    pass


class Graph:
    def __init__(self, calls: list[Callable[[], None]]) -> None:
        self.calls = calls

    def launch(self, stream=None) -> None:
        global graph_launches
        if _capture is not None:
            raise RuntimeError("cudaGraphLaunch while a stream captures")
        graph_launches += 1
        for call in self.calls:
            call()


_current: list = []


class Stream:
    def __init__(self, null: bool = False, non_blocking: bool = False, ptr: int = 2) -> None:
        self.ptr = 0 if null else ptr
        self.non_blocking = non_blocking

    def __enter__(self):
        _current.append(self)
        return self

    def __exit__(self, *exc):
        _current.pop()
        return False

    def begin_capture(self, mode=None) -> None:
        global _capture
        if self.ptr in (0, 1):
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if _capture is not None:
            raise RuntimeError("a stream is already capturing")
        _capture = []

    def end_capture(self) -> Graph:
        global _capture
        if _capture is None:
            raise RuntimeError("cudaErrorIllegalState: the stream is not capturing")
        calls, _capture = _capture, None
        return Graph(calls)

    def is_capturing(self) -> bool:
        return _capture is not None

    def record(self, event=None) -> Event:
        return event or Event()

    def wait_event(self, event) -> None:
        pass

    def synchronize(self) -> None:
        refuse_transfer("synchronisations")


_null = Stream(null=True)


def get_current_stream() -> Stream:
    return _current[-1] if _current else _null


class MemoryPool:
    """Keeps every block it gave out until it dies (a private pool: nothing else reuses it)."""

    def __init__(self) -> None:
        self.blocks: list = []

    def malloc(self, nbytes: int):
        self.blocks.append(nbytes)
        return nbytes


@contextlib.contextmanager
def using_allocator(allocator=None):
    yield
