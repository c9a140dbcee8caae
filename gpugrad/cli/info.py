"""``gpugrad info``: devices, versions and the fused kernels' status."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import _dist


def cmd_info(args: argparse.Namespace) -> int:
    from gpugrad.bench.report import environment_info

    d = environment_info()
    d["distributed"] = _dist.info()
    if args.json:
        Path(args.json).write_text(json.dumps(d, indent=2) + "\n", encoding="utf-8")
    v = d["versions"]
    print(f"gpugrad {v['gpugrad']}")
    print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if k != "gpugrad"))
    print(f"platform: {d['platform']}")
    print("devices:")
    for dev in d["devices"]:
        if dev["device"] == "cpu":
            blas = "; ".join(f"{b['internal_api']} {b['version']} ({b['num_threads']} threads)"
                             for b in dev["blas"])
            print(f"  cpu     {dev['name']}, {dev['threads']} threads"
                  + (f"; BLAS: {blas}" if blas else ""))
            print(f"          malloc: {dev['malloc']}")
        else:
            print(f"  {dev['device']:<7} {dev['name']}, {dev['memory_bytes'] / 2**30:.1f} GiB")
    if not d["cuda_available"]:
        print(f"  cuda    unavailable: {d['cuda_unavailable_reason']}")
    print(f"default device: {d['default_device']} (set GPUGRAD_DEVICE to change it)")
    k = d["kernels"]
    state = "on" if k["fused_enabled"] else "off"
    print(f"fused kernels: {state} (GPUGRAD_FUSED=0 switches them off)")
    if k["sources"] is None:
        print(f"kernel sources: {k['note'] or 'not found'}")
    else:
        where = f" in {k['dir']}" if k.get("dir") else ""
        print(f"kernel sources{where}: {', '.join(k['sources']) or 'none found'}")
    _dist.print_info(d["distributed"])
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    pi = sub.add_parser("info", help="devices, versions and fused-kernel status")
    pi.add_argument("--json", metavar="PATH", help="also write the information as JSON")
    pi.set_defaults(func=cmd_info)
