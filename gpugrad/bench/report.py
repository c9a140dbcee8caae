"""Presenting benchmark results: machine header, derived columns, text table, JSON and PNG plot."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = [
    "MissingDependency", "add_derived", "cpu_model", "environment_info", "format_table",
    "machine_info",
    "plot", "require_matplotlib", "write_json",
]

SCHEMA_VERSION = 1


class MissingDependency(RuntimeError):
    """An optional package a feature needs is not installed (the message says what to install)."""


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux; ``platform`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use, not what the box has
    except AttributeError:
        return os.cpu_count() or 1


def _blas_info() -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("internal_api", "num_threads", "architecture", "version")
    return [{k: p.get(k) for k in keys} for p in threadpool_info() if p.get("user_api") == "blas"]


def machine_info(devices: list[str]) -> dict[str, Any]:
    """CPU model and threads, each requested GPU's name and memory (or why CUDA is missing)."""
    import gpugrad as gg

    threads = _threads()
    info: dict[str, Any] = {
        "cpu": {"model": cpu_model(), "threads": threads, "blas": _blas_info(),
                "summary": f"{cpu_model()}, {threads} threads"},
        "gpus": [],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if any(d != "cpu" for d in devices):
        for spec in devices:
            if spec == "cpu":
                continue
            dev = gg.device(spec)
            name, mem = dev.backend.device_name(), dev.backend.total_memory()
            info["gpus"].append({"device": str(dev), "name": name, "memory_bytes": mem,
                                 "summary": f"{dev}: {name}, {mem / 2**30:.1f} GiB"})
    if not gg.cuda.is_available():
        info["cuda_unavailable_reason"] = gg.cuda.unavailable_reason()
    return info


def _dist_versions(prefix: str) -> dict[str, str]:
    """Installed distributions named ``prefix*`` (reads metadata only: imports nothing)."""
    from importlib import metadata

    found = {}
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower()
        if name.startswith(prefix):
            found[name] = dist.version
    return found


def _kernel_status() -> dict[str, Any]:
    from gpugrad import backend

    status: dict[str, Any] = {"fused_enabled": backend.fused_enabled(), "dir": None,
                              "sources": None, "note": None}
    try:
        from gpugrad.backend import kernels
    except ImportError as exc:  # the loader is optional for everything but CUDA fused ops
        status["note"] = f"kernel loader not available ({exc})"
        return status
    try:
        status["dir"] = str(kernels.kernels_dir())
        status["sources"] = [f"{name}.cu" for name in kernels.families()]
    except (FileNotFoundError, AttributeError) as exc:
        status["note"] = str(exc)
    return status


def _default_device() -> str:
    """The default device, or why it cannot be used (GPUGRAD_DEVICE=cuda on a CPU machine):
    ``gpugrad info`` is where one goes to find that out, so it must not fail on it."""
    import gpugrad as gg

    try:
        return str(gg.backend.default_device())
    except gg.DeviceError as exc:
        return f"unavailable ({exc})"


def environment_info() -> dict[str, Any]:
    """Versions, devices and fused-kernel status: what ``gpugrad info`` prints (and ``--json``
    writes); also the ``environment`` section of every bench result."""
    import numpy as np

    import gpugrad as gg
    from gpugrad.backend import host_malloc

    devices: list[dict[str, Any]] = [
        {"device": "cpu", "name": cpu_model(), "threads": _threads(), "blas": _blas_info(),
         "malloc": host_malloc.state}]
    for i in range(gg.cuda.device_count()):
        dev = gg.device(f"cuda:{i}")
        devices.append({"device": str(dev), "name": dev.backend.device_name(),
                        "memory_bytes": dev.backend.total_memory()})
    versions = {"gpugrad": gg.__version__, "python": platform.python_version(),
                "numpy": np.__version__}
    if gg.cuda.is_available():
        versions["cupy"] = gg.device("cuda").xp.__version__  # the backend's cupy module
    else:
        versions.update(_dist_versions("cupy"))  # installed but unusable is worth knowing
    return {
        "versions": versions,
        "platform": platform.platform(),
        "devices": devices,
        "cuda_available": gg.cuda.is_available(),
        "cuda_unavailable_reason": gg.cuda.unavailable_reason() or None,
        "default_device": _default_device(),
        "kernels": _kernel_status(),
    }


def _key(row: dict[str, Any], **override: Any) -> tuple:
    r = {**row, **override}
    return (r["suite"], r["name"], r["case"], r["impl"], r.get("variant", ""), r["device"])


def add_derived(rows: list[dict[str, Any]]) -> None:
    """Fill ``throughput``, ``speedup_vs_cpu``, ``ratio_vs_torch`` and ``fused_speedup`` in place.

    speedup_vs_cpu = the same impl's CPU median / this median (> 1: this device is faster);
    ratio_vs_torch = this gpugrad median / torch's median on the same device (< 1: gpugrad faster);
    fused_speedup = the unfused median / the fused median (kernels suite).
    """
    by_key = {_key(r): r for r in rows}
    for r in rows:
        r["throughput"] = r["work"] / r["median_s"] if r["median_s"] > 0 else None
        cpu = by_key.get(_key(r, device="cpu"))
        r["speedup_vs_cpu"] = cpu["median_s"] / r["median_s"] if cpu else None
        r["ratio_vs_torch"] = None
        if r["impl"] == "gpugrad":
            torch_row = by_key.get(_key(r, impl="torch", variant=""))
            if torch_row:
                r["ratio_vs_torch"] = r["median_s"] / torch_row["median_s"]
        # A spread wider than the median means the repeats disagree: another process, frequency
        # scaling or swapping got in the way, and the median is not to be trusted.
        r["noisy"] = r["iqr_s"] > r["median_s"]
        r["fused_speedup"] = None
        if r.get("variant") == "fused":
            unfused = by_key.get(_key(r, variant="unfused"))
            if unfused:
                r["fused_speedup"] = unfused["median_s"] / r["median_s"]


def _time(s: float | None) -> str:
    if s is None:
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def _tput(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    v = v / {"GFLOP/s": 1e9, "GB/s": 1e9}.get(unit, 1.0)
    return f"{v:,.0f} {unit}" if v >= 100 else f"{v:.3g} {unit}"


def _ratio(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def format_table(result: dict[str, Any]) -> str:
    """The side-by-side text table, one section per suite, preceded by the machine header."""
    m = result["machine"]
    out = [f"gpugrad {result['versions']['gpugrad']} bench — {result['date']}",
           f"CPU: {m['cpu']['summary']}"]
    out += [f"GPU: {g['summary']}" for g in m["gpus"]]
    if not m["gpus"] and m.get("cuda_unavailable_reason"):
        out.append(f"GPU: none ({m['cuda_unavailable_reason']})")
    for dev, times in result.get("kernel_build_s", {}).items():
        built = ", ".join(f"{k} {v:.3f} s" if isinstance(v, float) else f"{k} failed ({v})"
                          for k, v in times.items())
        out.append(f"kernel build on {dev} (before timing; NVRTC or CuPy's disk cache): {built}")
    out += _load_lines(result.get("load"))
    out.append("median of repeats after warm-up; spread = IQR; cold = the first call (allocation, "
               "caches, lazy compiles), excluded from the median; ! = IQR wider than the median "
               "(noisy: rerun on a quiet machine)")
    headers = ["case", "device", "impl", "median", "IQR", "throughput", "×CPU", "cold"]
    if any(r["ratio_vs_torch"] is not None for r in result["rows"]):
        headers.insert(7, "÷torch")
    if any(r["fused_speedup"] is not None for r in result["rows"]):
        headers.insert(7, "fused×")
    by_suite: dict[str, list] = defaultdict(list)
    for r in result["rows"]:
        by_suite[r["suite"]].append(r)
    for suite, rows in by_suite.items():
        out.append("")
        out.append(f"== {suite} ==")
        table = [headers]
        for r in rows:
            impl = r["impl"] + (f" ({r['variant']})" if r.get("variant") else "")
            cells = {"case": f"{r['name']} {r['case']}", "device": r["device"], "impl": impl,
                     "median": _time(r["median_s"]) + (" !" if r.get("noisy") else ""),
                     "IQR": _time(r["iqr_s"]),
                     "throughput": _tput(r["throughput"], r["unit"]),
                     "×CPU": _ratio(r["speedup_vs_cpu"]) if r["device"] != "cpu" else "",
                     "fused×": _ratio(r["fused_speedup"]) if r.get("variant") == "fused" else "",
                     "÷torch": _ratio(r["ratio_vs_torch"]), "cold": _time(r["first_call_s"])}
            table.append([cells[h] for h in headers])
        widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
        for i, row in enumerate(table):
            out.append("  ".join(c.ljust(w) if j < 3 else c.rjust(w)
                                 for j, (c, w) in enumerate(zip(row, widths))).rstrip())
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
    if result["skipped"]:
        out.append("")
        out.append("skipped:")
        out += [f"  {s['suite']}/{s['name']} {s['case']} on {s['device']} ({s['impl']} "
                f"{s['variant']}): {s['reason']}".replace(" )", ")") for s in result["skipped"]]
    return "\n".join(out)


def _load_lines(load: dict[str, Any] | None) -> list[str]:
    if not load:
        return []

    def text(s: dict[str, Any]) -> str:
        parts = []
        if s.get("other_cpus") is not None:
            parts.append(f"{s['other_cpus']:.2f} cores used by other processes")
        if s.get("loadavg_1m") is not None:
            parts.append(f"load average {s['loadavg_1m']:.2f}")
        return ", ".join(parts) or "unknown"

    lines = [f"machine load: before {text(load['before'])}; after {text(load['after'])}"]
    if load.get("busy"):
        lines.append(busy_warning())
    return lines


def busy_warning() -> str:
    return ("WARNING: the machine was busy with other work during this run; the times below are "
            "inflated and unreliable, so rerun on a quiet machine before quoting them")


def result_header(devices: list[str], config: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    import gpugrad as gg

    versions = {"gpugrad": gg.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    return {
        "schema": SCHEMA_VERSION,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "versions": versions,
        "machine": machine_info(devices),
        "devices": devices,
        "config": config,
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                               "OMP_NUM_THREADS", "GPUGRAD_FUSED")},
        "kernels": environment_info()["kernels"],
    }


def write_json(result: dict[str, Any], path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or a clear MissingDependency."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependency(
            "--plot needs matplotlib, which is not installed: pip install 'gpugrad[plot]' "
            "(or pip install matplotlib)") from None
    matplotlib.use("Agg")  # no display needed; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def crossover(cpu: dict[float, float], dev: dict[float, float]) -> float | None:
    """The smallest size from which ``dev`` beats the CPU at that size and every larger one."""
    sizes = sorted(set(cpu) & set(dev))
    best = None
    for s in reversed(sizes):
        if dev[s] < cpu[s]:
            best = s
        else:
            break
    return best


def _ops_panel(ax: Any, rows: list[dict[str, Any]], name: str) -> None:
    """Time per call against size, log-log, one line per device/impl, the GPU crossover marked."""
    from matplotlib.ticker import NullFormatter

    series: dict[tuple[str, str], dict[float, float]] = defaultdict(dict)
    unit = ""
    for r in rows:
        if r["suite"] == "ops" and r["name"] == name:
            series[(r["device"], r["impl"])][r["size"]] = r["median_s"]
            unit = r["size_unit"]
    for (dev, impl), pts in sorted(series.items()):
        xs = sorted(pts)
        style = "--" if impl == "torch" else "-"
        ax.loglog(xs, [pts[x] for x in xs], style, marker="o", ms=3, label=f"{dev} {impl}")
    cpu = series.get(("cpu", "gpugrad"), {})
    for (dev, impl), pts in series.items():
        if dev == "cpu" or impl != "gpugrad" or not cpu:
            continue
        x = crossover(cpu, pts)
        if x is not None:
            ax.axvline(x, color="grey", ls=":")
            ax.annotate(f"{dev} wins from {x:g}", (x, ax.get_ylim()[0]), fontsize=8,
                        rotation=90, va="bottom", ha="right")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels pile up on short ranges
    ax.set_title(f"ops: {name}")
    ax.set_xlabel(unit)
    ax.set_ylabel("median time per call (s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _barh_panel(ax: Any, labels: list[str], groups: list[str], values: list[float], title: str,
                xlabel: str, fmt: str, reference: float | None = None) -> None:
    """Horizontal bars on a linear axis from zero, labels on the side (never crowded), each bar
    annotated with its value and coloured by its group (device and implementation)."""
    ys = list(range(len(labels)))[::-1]
    colour = {g: f"C{i % 10}" for i, g in enumerate(dict.fromkeys(groups))}
    ax.barh(ys, values, color=[colour[g] for g in groups])
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=7)
    top = max(values + [reference or 0.0]) or 1.0
    for y, v in zip(ys, values):
        ax.text(v + 0.01 * top, y, format(v, fmt), va="center", fontsize=7)
    if reference is not None:
        ax.axvline(reference, color="grey", ls=":")
    ax.set_xlim(0, top * 1.18)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)


def _impl(r: dict[str, Any]) -> str:
    return f"{r['device']} {r['impl']}"


def plot(result: dict[str, Any], path: str | os.PathLike) -> None:
    """One panel per op (time vs size per device, log-log, crossover marked); the MLP workloads
    as training throughput in samples/s (a step and an epoch are comparable that way); the fused
    kernels as their speed-up over the unfused composition. No empty panels."""
    plt = require_matplotlib()

    rows = result["rows"]
    ops = list(dict.fromkeys(r["name"] for r in rows if r["suite"] == "ops"))
    mlp = [r for r in rows if r["suite"] == "mlp" and r["throughput"]]
    fused = [r for r in rows if r["suite"] == "kernels" and r.get("fused_speedup")]
    summaries = [p for p in (("mlp", mlp), ("kernels", fused)) if p[1]]
    if not ops and not summaries:
        raise ValueError("nothing to plot: no rows were measured")
    # Ops on the top row, the summaries below, each row filling the full width.
    row_sizes = [n for n in (len(ops), len(summaries)) if n]
    cols = math.lcm(*row_sizes)
    fig = plt.figure(figsize=(5.4 * max(row_sizes), 4.4 * len(row_sizes)))
    grid = fig.add_gridspec(len(row_sizes), cols)
    row = 0
    if ops:
        w = cols // len(ops)
        for k, name in enumerate(ops):
            _ops_panel(fig.add_subplot(grid[row, k * w:(k + 1) * w]), rows, name)
        row += 1
    w = cols // max(1, len(summaries))
    for k, (suite, subset) in enumerate(summaries):
        ax = fig.add_subplot(grid[row, k * w:(k + 1) * w])
        if suite == "mlp":
            _barh_panel(ax, [f"{r['name']} {r['case']} — {_impl(r)}" for r in subset],
                        [_impl(r) for r in subset], [r["throughput"] for r in subset],
                        "MLP training throughput (higher is better)", "samples per second",
                        ",.0f")
        else:
            _barh_panel(ax, [f"{r['name']} {r['case']} — {r['device']}" for r in subset],
                        [r["device"] for r in subset], [r["fused_speedup"] for r in subset],
                        "fused kernel speed-up over the unfused ops (fwd+bwd)",
                        "unfused time ÷ fused time (1 = no gain)", ".2f", reference=1.0)
    m = result["machine"]
    header = m["cpu"]["summary"] + "".join(f" | {g['summary']}" for g in m["gpus"])
    if result.get("load", {}).get("busy"):
        header += " | BUSY MACHINE: times unreliable"
    fig.suptitle(f"gpugrad bench — {header}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
