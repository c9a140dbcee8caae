"""Deferred device-side checks: a training step on a GPU never waits for the GPU to validate.

An op whose inputs can only be validated on the device (labels of the fused cross-entropy, ...)
has its kernel write a small int64 flag array and registers it here with a function that turns
the flags' host copy into the exception to raise (or None). Nothing is read back then: the
pending flags of a device are read in ONE transfer at the next point that synchronises anyway
(``Tensor.item()``/``.numpy()``/``.tolist()``/``bool()``/printing, ``gg.cuda.synchronize()``,
the end of a ``gpugrad train`` epoch), and the first failed check raises its ``ValueError`` /
``IndexError`` there, naming the op that registered it. ``GPUGRAD_CHECKS=sync`` reads each flag
as soon as it is registered instead (the op itself raises), for debugging.

``host_reads()`` counts the device-to-host transfers gpugrad makes (the backends call
:func:`note_host_read`), so tests can assert that a training step makes none.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: Flags of one device read at once when this many are pending (bounds memory if never synced).
MAX_PENDING = 1024

Check = Callable[[np.ndarray], "BaseException | None"]
Reader = Callable[[Sequence[Any]], list]

_sync = os.environ.get("GPUGRAD_CHECKS", "").strip().lower() == "sync"
_pending: dict[Any, list[tuple[Any, Check]]] = {}
_lock = threading.Lock()
_reads = 0


def sync_mode() -> bool:
    """Whether checks run when registered (``GPUGRAD_CHECKS=sync``) instead of deferred."""
    return _sync


def set_sync_mode(enabled: bool) -> None:
    global _sync
    _sync = bool(enabled)


def note_host_read(count: int = 1) -> None:
    global _reads
    _reads += count


def host_reads() -> int:
    """Device-to-host transfers made by gpugrad so far (a test hook; never reset)."""
    return _reads


def defer(key: Any, flags: Any, check: Check, read: Reader) -> None:
    """Register ``flags`` (a small device array) of device ``key``; ``read`` copies a list of such
    arrays to the host in one transfer. In sync mode, or with too many pending, read now.
    While a CUDA graph captures on this thread the check is recorded instead: the flags have no
    value before the graph is launched (``start_recording``)."""
    rec = getattr(_recording, "active", None)
    if rec is not None:
        rec.items.append((key, flags, check, read))
        return
    with _lock:
        items = _pending.setdefault(key, [])
        items.append((flags, check))
        due = _sync or len(items) >= MAX_PENDING
    if due:
        flush(key, read)


def require(flags: Any, make_error: Check) -> None:
    """Check ``flags`` computed by an op: host (NumPy) flags now, raising ``make_error``'s
    exception; device flags at the next host read of their device (:func:`defer`)."""
    device = getattr(flags, "device", None)  # NumPy 2 arrays have device == "cpu"
    if device is None or isinstance(device, str):
        exc = make_error(np.asarray(flags))
        if exc is not None:
            raise exc
        return
    defer(("cuda", device.id), flags, make_error, read_cupy)


def discard(key: Any = None) -> None:
    """Drop pending checks unread (of device ``key``, or all): for tests that end mid-error."""
    with _lock:
        if key is None:
            _pending.clear()
        else:
            _pending.pop(key, None)


def pending(key: Any) -> int:
    with _lock:
        return len(_pending.get(key, ()))


def flush(key: Any, read: Reader) -> None:
    """Read every pending flag of device ``key`` in one transfer and raise the first failure."""
    with _lock:
        items = _pending.pop(key, None)
    if not items:
        return
    hosts = read([flags for flags, _ in items])
    for host, (_, check) in zip(hosts, items):
        exc = check(np.asarray(host))
        if exc is not None:
            raise exc


def read_cupy(arrays: Sequence[Any]) -> list[np.ndarray]:
    """Host copies of small CuPy arrays (one device) in one transfer: a :data:`Reader`."""
    import cupy

    flat = cupy.concatenate([a.reshape(-1) for a in arrays])
    note_host_read()
    host = cupy.asnumpy(flat)
    out, start = [], 0
    for a in arrays:
        out.append(host[start : start + a.size])
        start += a.size
    return out


_recording = threading.local()


class Recording:
    """The checks registered while a CUDA graph captures (see ``recording``): their flags are
    written again by each launch of the graph, so each launch registers them again."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, Any, Check, Reader]] = []

    def replay(self) -> None:
        """Register every recorded check once more, on a copy of its flags (the next launch
        overwrites them before they are read)."""
        for key, flags, check, read in self.items:
            defer(key, flags.copy(), check, read)


def recording() -> Recording | None:
    return getattr(_recording, "active", None)


def start_recording() -> Recording:
    """Collect instead of register the device checks of this thread until ``stop_recording``."""
    rec = Recording()
    _recording.active = rec
    return rec


def stop_recording() -> None:
    _recording.active = None
