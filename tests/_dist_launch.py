"""Finding ``mpiexec`` and launching ranks for the distributed tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def mpiexec() -> str | None:
    """``mpiexec`` from the venv that runs the tests (pip's mpich puts it there), else PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def skip_reason() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'gpugrad[mpi]'); multi-rank tests need it"
    if mpiexec() is None:
        return "no mpiexec next to the Python executable or on PATH (pip install mpich)"
    return None


requires_mpi = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


def launch(args: list[str], n: int = 2, timeout: float = 300, env: dict | None = None
           ) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``mpiexec -n n <python> args...`` from the repository root; returns (result, seconds).

    One BLAS thread per rank: two ranks share the CI's cores.
    """
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    full_env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                        full_env.get("PATH", "")])
    for var in ("PMI_SIZE", "PMI_RANK", "PMI_FD", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE"):
        full_env.pop(var, None)  # a test run itself launched by mpiexec must not leak its world
    before = _shm_segments()
    start = time.monotonic()
    try:
        result = subprocess.run([mpiexec(), "-n", str(n), sys.executable, *args], cwd=ROOT,
                                env=full_env, capture_output=True, text=True, timeout=timeout)
    finally:
        _remove_orphans(_shm_segments() - before)
    return result, time.monotonic() - start


_SHM = Path("/dev/shm")


def _shm_segments() -> set[Path]:
    return set(_SHM.glob("mpich_shm_*")) if _SHM.is_dir() else set()


def _remove_orphans(new: set[Path]) -> None:
    """MPICH unlinks its shared-memory segments at a clean exit only; a job that aborts (the
    failure tests end jobs on purpose) leaves them in /dev/shm. Remove those this launch made
    that no live process still maps (another job's segments stay)."""
    if not new:
        return
    mapped: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            mapped.update(line.split(None, 5)[-1].strip() for line in maps.read_text().splitlines()
                          if "mpich_shm_" in line)
        except OSError:  # the process ended, or is not ours to read
            continue
    for seg in new:
        if str(seg) not in mapped:
            seg.unlink(missing_ok=True)
