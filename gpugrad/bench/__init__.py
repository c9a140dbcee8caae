"""Benchmark machinery shared by ``gpugrad bench`` and the scripts in ``benchmarks/``.

- ``timing``: warm-up, calibrated repeats, medians with spread, CUDA events on GPUs;
- ``suites``: the workloads (mlp, kernels, ops), the same on every device, optionally vs torch;
- ``report``: machine header, derived columns (speedups, ratios), table, JSON and plot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .load import is_busy, sample_load
from .report import add_derived, format_table, plot, result_header, write_json
from .suites import SUITES, kernel_build_times, run_suites
from .timing import Measurement, Timer, measure

__all__ = [
    "SUITES", "Measurement", "Timer", "available_devices", "format_table", "measure", "plot",
    "run_bench", "write_json",
]


def available_devices() -> list[str]:
    """``cpu`` plus every CUDA device that the backend can reach."""
    import gpugrad as gg

    return ["cpu"] + [f"cuda:{i}" for i in range(gg.cuda.device_count())]


def run_bench(
    devices: list[str],
    suites: list[str] | tuple[str, ...] = SUITES,
    quick: bool = False,
    against_torch: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the suites on the devices and return the full result (header, rows, skipped)."""
    import gpugrad as gg

    devices = [str(gg.device(d)) for d in devices]  # normalise, and fail early if unavailable
    config = {"suites": list(suites), "quick": quick, "against": "torch" if against_torch else None}
    result = result_header(devices, config)
    before = sample_load()
    result["kernel_build_s"] = {d: kernel_build_times(gg.device(d)) for d in devices
                                if d != "cpu" and ("kernels" in suites or "mlp" in suites)}
    rows, skipped = run_suites(devices, list(suites), quick, against_torch, progress)
    after = sample_load()
    add_derived(rows)
    threads = result["machine"]["cpu"]["threads"]
    result["load"] = {"before": before, "after": after,
                      "busy": is_busy(before, threads) or is_busy(after, threads)}
    result["rows"] = rows
    result["skipped"] = skipped
    return result
