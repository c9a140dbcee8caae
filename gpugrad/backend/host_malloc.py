"""glibc's malloc, set up for arrays freed and allocated again every training step.

glibc serves a request above its *mmap threshold* with a fresh mapping, and hands the free top
of its heap back to the OS once that exceeds the *trim threshold*. Both start low (128 KiB and
twice that) and rise only as large blocks are freed, so whether an eager step reuses the memory
of the step before, or maps it again and page-faults every byte of it in afresh, depends on
where long-lived blocks happen to sit in the heap. On the 784-512-512-10 b256 step under
``DataParallel`` that was 1,557 page faults (6 MiB) and 35-40 % more time per step, switched
on and off by unrelated changes to the code. Importing gpugrad fixes both thresholds at the
values glibc's own adjustment stops at -- an mmap threshold of 32 MiB, trimming at twice that --
so freed arrays' memory is reused; larger arrays are still mapped afresh, where the faults are
small next to the arithmetic. The price is that up to 64 MiB freed at the top of the heap stays
with the process.

Left alone where the environment already sets glibc's malloc (``MALLOC_*_`` variables or
``glibc.malloc`` tunables), with ``GPUGRAD_HOST_MALLOC=default``, and on other C libraries.
"""

from __future__ import annotations

import ctypes
import os

MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # as glibc's adjustment pairs them
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                  "MALLOC_MMAP_MAX_")

#: what ``configure`` did, for ``gpugrad info``
state = "not configured"


def configure() -> str:
    """Set the thresholds (once per process; later calls only report). Returns ``state``."""
    global state
    if state != "not configured":
        return state
    libc = libc_version()
    if not libc.startswith("glibc"):
        state = "not glibc: left as it is"
    elif os.environ.get("GPUGRAD_HOST_MALLOC") == "default":
        state = "glibc's defaults (GPUGRAD_HOST_MALLOC=default)"
    elif any(v in os.environ for v in _USER_SETTINGS) or \
            "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        state = "set by the environment: left as it is"
    else:
        mallopt = ctypes.CDLL(None).mallopt
        if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and \
                mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1:
            state = (f"{libc}: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold "
                     f"{TRIM_THRESHOLD >> 20} MiB")
        else:
            state = f"{libc}: mallopt refused, left as it is"
    return state


def libc_version() -> str:
    """"glibc 2.36" and the like; "" where the C library does not say (not glibc)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):  # the name is unknown off glibc
        return ""
