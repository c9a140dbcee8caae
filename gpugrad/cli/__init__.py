"""The ``gpugrad`` command line: ``info``, ``train`` and ``bench``, one module each.

``gpugrad train`` is the first thing a newcomer runs: an MLP on the bundled handwritten digits, on
the best available device, with a progress bar and per-epoch metrics. ``gpugrad bench`` runs the
same workloads on each device side by side; its machinery lives in ``gpugrad.bench``.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import bench, info, train
from .common import CliError
from .train import DEFAULTS

__all__ = ["DEFAULTS", "CliError", "build_parser", "main"]


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("gpugrad")
    except metadata.PackageNotFoundError:  # a source checkout run with PYTHONPATH
        import gpugrad

        return gpugrad.__version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpugrad", description="gpugrad: reverse-mode autograd on CuPy (CUDA) and NumPy "
        "(CPU). Start with `gpugrad train`.")
    p.add_argument("--version", action="version", version=f"gpugrad {_version()}")
    sub = p.add_subparsers(dest="command", metavar="{info,train,bench}")
    for command in (info, train, bench):
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # a bare `gpugrad`: show what it can do
        parser.print_help()
        return 0
    from gpugrad.backend.errors import DeviceError

    try:
        return int(args.func(args))
    except (CliError, DeviceError) as exc:  # DeviceError: e.g. GPUGRAD_DEVICE=cuda without CUDA
        message = " ".join(str(exc).split())  # one line, whatever the exception held
        print(f"gpugrad {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gpugrad info | head`: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141

if __name__ == "__main__":
    sys.exit(main())
