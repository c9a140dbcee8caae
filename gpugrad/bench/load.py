"""How busy the machine is while benchmarking: timings taken while other processes use the CPU
are silently wrong (a 0.6 ms step measured as 63 ms), so ``gpugrad bench`` samples the load before
and after its run and says when the numbers should not be trusted."""

from __future__ import annotations

import os
import time
from typing import Any

__all__ = ["BUSY_CPUS", "is_busy", "sample_load"]

# Other processes using this much CPU (in cores) make the machine too busy for honest timings.
BUSY_CPUS = 0.25


def _proc_stat() -> tuple[float, float] | None:
    """(busy, total) jiffies over all CPUs from /proc/stat (Linux), else None."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 4:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def sample_load(interval: float = 0.5) -> dict[str, Any]:
    """Cores kept busy by *other* processes over ``interval`` seconds (all CPU time on the
    machine minus this process's own), and the 1-minute load average where the OS has one."""
    sample: dict[str, Any] = {"interval_s": interval, "other_cpus": None, "loadavg_1m": None}
    if hasattr(os, "getloadavg"):
        try:
            sample["loadavg_1m"] = os.getloadavg()[0]
        except OSError:
            pass
    first, own0 = _proc_stat(), os.times()
    time.sleep(interval)
    second, own1 = _proc_stat(), os.times()
    if first is not None and second is not None and second[1] > first[1]:
        ncpu = os.cpu_count() or 1
        busy_frac = (second[0] - first[0]) / (second[1] - first[1])
        own = (own1.user + own1.system - own0.user - own0.system) / interval
        sample["other_cpus"] = max(0.0, busy_frac * ncpu - own)
    return sample


def is_busy(sample: dict[str, Any], threads: int) -> bool:
    """Whether ``sample`` shows a machine too busy to time on."""
    if sample.get("other_cpus") is not None:
        return sample["other_cpus"] >= BUSY_CPUS
    load = sample.get("loadavg_1m")
    return load is not None and load >= 0.5 * threads
