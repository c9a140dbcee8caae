"""The CUDA kernel sources (``kernels/*.cu``): finding, reading, compile-checking and loading them.

The sources live in ``<repo>/kernels`` in a checkout and in ``gpugrad/kernels`` in an installed
wheel (hatch force-include). Each ``.cu`` file is one kernel family; the ``.cuh`` headers beside
them hold shared helpers and are never compiled on their own: :func:`expand_source` pastes a
header's text in place of its ``#include "name.cuh"`` line, so NVRTC gets one self-contained source
and CuPy's kernel cache, keyed on that text, sees every header edit. :func:`compile_check` runs
NVRTC's low-level program API on that same expanded text, which needs no GPU, so CI can compile
every kernel; :func:`get_function` is the CuPy-side loader used by ``fused_cuda``. Nothing here
imports cupy at import time: CPU-only runs and CI use this module too.
"""

from __future__ import annotations

import functools
import re
import threading
from pathlib import Path
from typing import Any

#: Options shared by the run-time compile (CuPy adds ``-arch`` for the GPU) and the CI check.
NVRTC_OPTIONS: tuple[str, ...] = ("--std=c++17",)
#: What CuPy's RawModule always appends at run time (cupy/cuda/compiler.py), so the CI check
#: compiles the code that really runs. ``-ftz=true`` flushes float32 denormals to zero: results
#: below ~1.2e-38 are 0 on the GPU where NumPy keeps them (e.g. sigmoid(x) for x < -87.3).
CUPY_RUNTIME_OPTIONS: tuple[str, ...] = ("-ftz=true", "--device-as-default-execution-space")
#: Architectures CI compiles for: every one NVRTC 13 supports that users have (Turing, Ampere,
#: Ada, Hopper, Blackwell data-centre and consumer); register limits and spills differ per arch.
CHECK_ARCHES: tuple[str, ...] = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120")

_HERE = Path(__file__).resolve().parent
_CANDIDATE_DIRS = (
    _HERE.parent / "kernels",  # installed wheel: gpugrad/kernels
    _HERE.parent.parent / "kernels",  # source checkout (also editable installs): <repo>/kernels
)
_WARNING = re.compile(r"\bwarning\b", re.IGNORECASE)
_INCLUDE = re.compile(r"^\s*#\s*include(.*)$")
_LOCAL_HEADER = re.compile(r'^\s*"([A-Za-z0-9_][A-Za-z0-9_.-]*\.cuh)"\s*(//.*)?$')


@functools.lru_cache(maxsize=1)
def kernels_dir() -> Path:
    """The folder holding the ``*.cu`` sources, from a wheel or from a source checkout."""
    for d in _CANDIDATE_DIRS:
        if d.is_dir() and any(d.glob("*.cu")):
            return d
    searched = ", ".join(str(d) for d in _CANDIDATE_DIRS)
    raise FileNotFoundError(
        f"gpugrad: CUDA kernel sources (*.cu) not found; searched {searched}. A wheel ships "
        "them as gpugrad/kernels (pyproject force-include); a checkout keeps them in kernels/."
    )


def families() -> list[str]:
    """Kernel family names, one per ``kernels/<family>.cu`` (``*.cuh`` headers are not families)."""
    return sorted(p.stem for p in kernels_dir().glob("*.cu"))


def kernel_path(family: str) -> Path:
    path = kernels_dir() / f"{family}.cu"
    if not path.is_file():
        raise FileNotFoundError(
            f"gpugrad: no kernel file {path.name} in {path.parent} (available: {families()})"
        )
    return path


class IncludeError(ValueError):
    """An ``#include`` that :func:`expand_source` does not resolve, or a header it cannot read."""


def expand_source(path: str | Path) -> str:
    """The source NVRTC compiles for the kernel file ``path``, as CuPy and the CI check get it.

    Each line ``#include "name.cuh"`` is replaced by the text of ``name.cuh`` from the same folder
    (itself expanded the same way), between ``#line`` directives so that NVRTC's messages name the
    header's and the kernel file's own lines. No other include is allowed: NVRTC has no toolkit or
    host headers, and a header NVRTC looked up itself would not be part of the text CuPy's cache
    is keyed on. Anything else (``<...>``, a path, a file that is not a ``.cuh`` in the folder, an
    include cycle) raises :class:`IncludeError`.
    """
    return _expand(Path(path), ())


def _expand(path: Path, stack: tuple[Path, ...]) -> str:
    if path in stack:
        chain = " -> ".join(p.name for p in (*stack, path))
        raise IncludeError(f"{stack[-1]}: include cycle {chain}")
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").split("\n")):
        inc = _INCLUDE.match(line)
        if inc is None:
            out.append(line)
            continue
        where = f"{path}:{i + 1}"
        name = _LOCAL_HEADER.match(inc.group(1))
        if name is None:
            raise IncludeError(
                f"{where}: unsupported {line.strip()!r}; kernel sources may only include a header "
                f'of their own folder by name, as #include "name.cuh" (NVRTC has no toolkit '
                "headers; the loader pastes local headers into the source)"
            )
        header = path.parent / name.group(1)
        if not header.is_file():
            raise IncludeError(f"{where}: header {header.name} not found in {path.parent}")
        body = _expand(header, (*stack, path))
        if body and not body.endswith("\n"):
            body += "\n"
        out.append(f'#line 1 "{header.name}"\n{body}#line {i + 2} "{path.name}"')
    return "\n".join(out)


def read_source(family: str) -> str:
    """``kernels/<family>.cu`` with its headers pasted in: the text CuPy compiles (and caches)."""
    return expand_source(kernel_path(family))


# ---------------------------------------------------------------------------------------------
# NVRTC without a GPU


def _arch_option(arch: str | int) -> str:
    s = str(arch).strip().lower()
    for prefix in ("--gpu-architecture=", "-arch=", "sm_", "compute_"):
        if s.startswith(prefix):
            s = s[len(prefix) :]
    s = s.removeprefix("sm_")
    if not s.isdigit():
        raise ValueError(f"compile_check: bad architecture {arch!r}; expected e.g. 'sm_80' or 90")
    return f"--gpu-architecture=sm_{s}"


def _compile_cuda_bindings(src: str, name: str, options: list[str]) -> tuple[bool, str]:
    from cuda.bindings import nvrtc

    err, prog = nvrtc.nvrtcCreateProgram(src.encode(), name.encode(), 0, [], [])
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        return False, f"nvrtcCreateProgram failed: {err}"
    try:
        opts = [o.encode() for o in options]
        (result,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        err, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log = b""
        if err == nvrtc.nvrtcResult.NVRTC_SUCCESS and size > 1:
            buf = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, buf)
            log = buf
        text = log.rstrip(b"\x00 ").decode(errors="replace")
        if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            return False, f"{result}\n{text}".strip()
        return True, text
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _compile_cupy(src: str, name: str, options: list[str]) -> tuple[bool, str]:
    from cupy.cuda import nvrtc

    prog = nvrtc.createProgram(src, name, (), ())
    try:
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError as exc:
            return False, f"{exc}\n{nvrtc.getProgramLog(prog)}".strip()
        return True, nvrtc.getProgramLog(prog).rstrip("\x00 ")
    finally:
        nvrtc.destroyProgram(prog)


@functools.lru_cache(maxsize=1)
def nvrtc_binding() -> str:
    """Which NVRTC binding :func:`compile_check` uses: ``"cuda-bindings"`` or ``"cupy"``."""
    reasons = []
    try:
        from cuda.bindings import nvrtc

        err, major, minor = nvrtc.nvrtcVersion()
        if err == nvrtc.nvrtcResult.NVRTC_SUCCESS:
            return "cuda-bindings"
        reasons.append(f"cuda-bindings: nvrtcVersion returned {err}")
    except Exception as exc:  # missing wheel or libnvrtc: try the next binding
        reasons.append(f"cuda-bindings: {type(exc).__name__}: {exc}")
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
        return "cupy"
    except Exception as exc:
        reasons.append(f"cupy: {type(exc).__name__}: {exc}")
    raise RuntimeError(
        "gpugrad: no NVRTC available to compile-check kernels (install the test extra: "
        "nvidia-cuda-nvrtc and cuda-bindings 13.0.x). " + "; ".join(reasons)
    )


def nvrtc_version() -> tuple[int, int]:
    if nvrtc_binding() == "cuda-bindings":
        from cuda.bindings import nvrtc

        _, major, minor = nvrtc.nvrtcVersion()
        return int(major), int(minor)
    from cupy.cuda import nvrtc

    major, minor = nvrtc.getVersion()
    return int(major), int(minor)


def compile_check(
    path: str | Path, arch: str | int = "sm_80", *, verbose: bool = False
) -> tuple[bool, str]:
    """Compile one ``.cu`` file to SASS for ``arch`` with NVRTC; no GPU needed.

    The source is :func:`expand_source`'s, the text CuPy gets at run time. Returns ``(ok, log)``.
    ``ok`` is False on a compile error (an include :func:`expand_source` rejects included) and also
    on any compiler or ptxas warning, register spills included (``--warn-on-spills``): the kernels
    are meant to build clean. ``verbose`` adds ptxas's per-kernel register and shared-memory report
    to the log.
    """
    path = Path(path)
    options = [*NVRTC_OPTIONS, _arch_option(arch), *CUPY_RUNTIME_OPTIONS,
               "--ptxas-options=--warn-on-spills"]
    if verbose:
        options.append("--ptxas-options=-v")
    try:
        src = expand_source(path)
    except IncludeError as exc:
        return False, str(exc)
    if nvrtc_binding() == "cuda-bindings":
        ok, log = _compile_cuda_bindings(src, path.name, options)
    else:
        ok, log = _compile_cupy(src, path.name, options)
    if ok and _WARNING.search(log):
        ok = False
    return ok, log


# ---------------------------------------------------------------------------------------------
# CuPy loader (run time)

_lock = threading.Lock()
_modules: dict[tuple[str, int], Any] = {}
_functions: dict[tuple[str, str, int], Any] = {}


def _module(family: str, device_id: int):
    import cupy

    key = (family, device_id)
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                mod = cupy.RawModule(code=read_source(family), options=NVRTC_OPTIONS)
                _modules[key] = mod
    return mod


def get_function(family: str, name: str, device_id: int):
    """``cupy.RawKernel`` for ``name`` in ``kernels/<family>.cu``, compiled once per device.

    Compilation happens on first use (CuPy also caches the binary on disk). A compile failure is
    raised as ``RuntimeError`` naming the kernel file and carrying NVRTC's log.
    """
    key = (family, name, device_id)
    fn = _functions.get(key)
    if fn is not None:
        return fn
    import cupy

    with cupy.cuda.Device(device_id):
        try:
            fn = _module(family, device_id).get_function(name)
        except cupy.cuda.compiler.CompileException as exc:
            raise RuntimeError(
                f"gpugrad: NVRTC failed to compile CUDA kernel file {kernel_path(family)} "
                f"(options {' '.join(NVRTC_OPTIONS)}):\n{exc.get_message()}"
            ) from exc
        except Exception as exc:  # loading the module or finding the symbol failed
            raise RuntimeError(
                f"gpugrad: loading kernel {name!r} from {kernel_path(family)} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    with _lock:
        _functions[key] = fn
    return fn
