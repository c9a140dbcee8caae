"""Compile every kernels/*.cu with NVRTC for sm_75 to sm_120 (no GPU needed).

Each file is compiled as CuPy gets it at run time: with its ``#include "*.cuh"`` headers pasted in
by gpugrad.backend.kernels.expand_source (the headers are never compiled on their own).
Exits non-zero, printing NVRTC's log, on any compile error, compiler warning or register spill.
Usage: python tools/check_kernels.py [--arch sm_80 --arch sm_120 ...] [-v]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpugrad.backend import kernels  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch", action="append", help=f"target (repeatable); default {list(kernels.CHECK_ARCHES)}"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print ptxas register/smem usage per kernel"
    )
    args = parser.parse_args(argv)
    arches = args.arch or list(kernels.CHECK_ARCHES)
    try:
        binding = kernels.nvrtc_binding()
        major, minor = kernels.nvrtc_version()
        files = [kernels.kernel_path(family) for family in kernels.families()]
        headers = sorted(p.name for p in kernels.kernels_dir().glob("*.cuh"))
    except (RuntimeError, FileNotFoundError) as exc:
        print(f"check_kernels: {exc}", file=sys.stderr)
        return 2
    print(f"NVRTC {major}.{minor} via {binding}; {len(files)} kernel files (headers "
          f"{', '.join(headers) or 'none'}); arches {arches}")  # fmt: skip
    failures = 0
    for path in files:
        for arch in arches:
            ok, log = kernels.compile_check(path, arch, verbose=args.verbose)
            print(f"{'ok  ' if ok else 'FAIL'} {path.name} {arch}")
            if log and (not ok or args.verbose):
                print("    " + log.replace("\n", "\n    "))
            failures += not ok
    if failures:
        print(f"check_kernels: {failures} compile(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
