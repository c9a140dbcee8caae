"""CUDA graph capture for ``gg.compile`` (CuPy 14): the CuPy calls, kept in the backend.

A ``GraphStream`` owns what one compiled program's graphs need: a non-blocking stream (CuPy
refuses to capture on the legacy default stream) and a private memory pool. Every array made while
the program is captured comes from that pool and nothing else allocates from it, so the addresses
baked into the graphs stay the program's own while the graphs live: memory a slot frees during
the capture is reused only by later nodes of the same stream order, never by other code.

Capture is lazy: the captured kernels run only when the graph is launched. cuBLAS cannot be
captured in CuPy 14.2 (``cublas.setStream`` raises ``NotImplementedError`` while the stream
captures; cupy#6290), nor can host reads or host-to-device copies (``RuntimeError``); the caller
ends the capture before such work and runs it eagerly on the same stream.
"""

from __future__ import annotations

import contextlib
from typing import Any

import cupy

from . import checks


class GraphStream:
    """The stream, pool and capture calls of one compiled program on one GPU."""

    def __init__(self, device_index: int) -> None:
        self.device_index = device_index
        with cupy.cuda.Device(device_index):
            self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()
        self._recording: checks.Recording | None = None

    @contextlib.contextmanager
    def running(self):
        """Run on this stream, ordered after the work already queued on the caller's stream; the
        caller's stream then waits for everything queued here (events: no host sync)."""
        outer = cupy.cuda.get_current_stream()
        self.stream.wait_event(outer.record())
        try:
            with self.stream:
                yield
        finally:
            outer.wait_event(self.stream.record())

    def private_memory(self):
        """Allocate from the program's own pool (while capturing, and for the arrays the graphs
        read: inputs and the results of eager steps)."""
        return cupy.cuda.using_allocator(self.pool.malloc)

    def begin(self) -> None:
        self.stream.begin_capture()
        self._recording = checks.start_recording()

    def end(self) -> tuple[Any, checks.Recording]:
        """The captured graph and the device checks its steps registered."""
        rec, self._recording = self._recording, None
        checks.stop_recording()
        return self.stream.end_capture(), rec

    def abort(self) -> None:
        """End a capture that failed: the partial graph is dropped, nothing of it ran."""
        self._recording = None
        checks.stop_recording()
        if self.stream.is_capturing():
            with contextlib.suppress(Exception):
                self.stream.end_capture()

    def launch(self, graph: Any, rec: checks.Recording | None) -> None:
        graph.launch(self.stream)
        if rec is not None and rec.items:
            rec.replay()

    @staticmethod
    def copy_into(dst: Any, src: Any) -> None:
        """``dst[...] = src`` on the current stream (a device copy kernel)."""
        cupy.copyto(dst, src)


def capture_error_reason(exc: BaseException) -> str:
    """Why the capture failed, in words (cuBLAS, a host transfer, or the exception)."""
    msg = str(exc)
    if isinstance(exc, NotImplementedError) and "cuBLAS" in msg:
        return "a cuBLAS call (CuPy refuses cuBLAS during capture, cupy#6290)"
    if "capturing" in msg:
        return f"a host transfer or synchronisation ({msg})"
    return f"{type(exc).__name__}: {msg}"
