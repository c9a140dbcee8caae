"""``gpugrad bench``: the same workloads on each device, side by side (``gpugrad.bench``)."""

from __future__ import annotations

import argparse
import sys

from .common import CliError, check_output_path, parse_device


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise CliError(f"--against torch: PyTorch is not installed ({exc}); install torch or "
                       "leave --against out") from None


def cmd_bench(args: argparse.Namespace) -> int:
    from gpugrad.bench import SUITES, available_devices, format_table, plot, run_bench, write_json
    from gpugrad.bench.report import MissingDependency, busy_warning, require_matplotlib

    suites = [s for s in args.suite.split(",") if s]
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise CliError(f"--suite: unknown suite(s) {', '.join(unknown)}; choose from "
                       f"{', '.join(SUITES)}")
    if args.against not in (None, "torch"):
        raise CliError("--against: only 'torch' is supported")
    if args.against == "torch":
        _require_torch()  # the comparison asked for is impossible: say so before any timing
    for flag in ("json", "plot"):
        if getattr(args, flag):
            check_output_path(f"--{flag}", getattr(args, flag))
    if args.plot:
        try:
            require_matplotlib()  # fail before minutes of benchmarking, not after
        except MissingDependency as exc:
            raise CliError(str(exc)) from None
    devices = args.devices.split(",") if args.devices else available_devices()
    for spec in devices:
        parse_device(spec)  # an unavailable device is an error up front, with the reason

    def progress(label: str) -> None:
        if not args.quiet:
            print(f"  {label}", file=sys.stderr, flush=True)

    result = run_bench(devices, suites, quick=args.quick, against_torch=args.against == "torch",
                       progress=progress)
    print(format_table(result))
    if result["load"]["busy"]:
        print(f"gpugrad bench: {busy_warning()}", file=sys.stderr)
    if args.json:
        write_json(result, args.json)
        print(f"\nwrote {args.json}")
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    pb = sub.add_parser("bench", help="time the same workloads on each device, side by side")
    pb.add_argument("--devices", help="comma-separated, e.g. cpu,cuda (default: all available)")
    pb.add_argument("--suite", default="mlp,kernels,ops",
                    help="comma-separated subset of mlp,kernels,ops")
    pb.add_argument("--quick", action="store_true", help="fewer sizes and repeats (a smoke run)")
    pb.add_argument("--against", choices=["torch"], help="also time PyTorch on the same device")
    pb.add_argument("--json", metavar="PATH", help="write all rows and the header as JSON")
    pb.add_argument("--plot", metavar="PATH", help="write a PNG (needs 'gpugrad[plot]')")
    pb.add_argument("--quiet", action="store_true", help="no per-workload progress lines")
    pb.set_defaults(func=cmd_bench)
