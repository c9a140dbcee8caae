"""Build CUDA C (the exact text CuPy would compile) into a CPU shared library with g++.

The source is compiled unmodified against ``simt/simt.h`` except for the rewrites in
:data:`REWRITES`, the only constructs a CPU compiler cannot take (inline PTX, ``extern
__shared__``); anything else a CPU cannot run fails the build with :class:`BuildError`. A
generated wrapper adds one launch entry per ``extern "C" __global__`` kernel. Libraries are cached
by content hash outside the repository (``$GPUGRAD_SIMT_CACHE``, default
``~/.cache/gpugrad-simt``), so an unchanged kernel is compiled once per machine.

``GPUGRAD_SIMT_SANITIZE=1`` builds with AddressSanitizer + UBSan (out-of-bounds and misaligned
accesses abort with a report); the Python process must then have libasan preloaded (see the
README's Development section).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent / "simt"
#: Bytes of the dynamic shared-memory array of every module: the most any GPU offers a block
#: (227 KiB on sm_90) plus a guard the runtime checks after each block.
DYN_SMEM_CAPACITY = 227 * 1024 + 4096

# -fno-tree-slp-vectorize: GCC 12's SLP vectoriser at -O2 merges load_pack's scalar fallback (V
# element loads from a Pack whose type is alignas(16)) into one aligned 16-byte load (movaps),
# which faults on exactly the unaligned data that fallback exists for. CUDA never makes that
# assumption, so the emulator must not either.
# -fno-strict-aliasing: the kernels reinterpret shared memory and packs as CUDA allows.
# -ffp-contract=fast with -mfma: contract a*b+c into FMA as NVRTC does by default, so results
# that depend on contraction (lanes disagreeing in the last bit) show here too.
BASE_FLAGS = ("-std=gnu++17", "-O2", "-fno-tree-slp-vectorize", "-fno-strict-aliasing", "-fPIC",
              "-fvisibility=hidden", "-g0", "-w")  # fmt: skip
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                  "-fno-omit-frame-pointer", "-O1")  # fmt: skip


class BuildError(RuntimeError):
    """The source cannot be built for the emulator (compile error or unsupported construct)."""


_PTX_CVT = re.compile(
    r'asm\s*(?:volatile\s*)?\(\s*"cvt\.([a-z0-9.]+)\s+%0\s*,\s*%1\s*;"\s*:\s*"=[a-z]"\s*\(([^()]*)\)'
    r'\s*:\s*"[a-z]"\s*\(([^()]*)\)\s*\)\s*;'
)
#: PTX conversions the emulator implements (runtime.cpp, tested bit-exactly against NumPy).
PTX_CONVERSIONS = {"f32.f16": "cvt_f32_f16", "rn.f16.f32": "cvt_rn_f16_f32"}
_EXTERN_SHARED = re.compile(r"\bextern\s+__shared__\s+([^;\[]*?)\b(\w+)\s*\[\s*\]\s*;")
# A static (function-scope) __shared__ declaration with one declarator.
_STATIC_SHARED = re.compile(
    r"(?<!extern )\b__shared__\b([^;{}()]*?)\b(\w+)\s*((?:\[[^\]]*\]\s*)*);"
)
_KERNEL = re.compile(
    r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\(\s*(\d+)[^)]*\)\s*)?(\w+)\s*\('
)
_HALF_TYPES = {"half_t": "h", "bf16_t": "b"}

#: What :func:`translate` rewrites, for the record (tests check this list stays this short).
REWRITES = (
    "inline PTX cvt.f32.f16 / cvt.rn.f16.f32 -> simt::cvt_* calls",
    "extern __shared__ T name[] -> extern T name[] (defined by the wrapper, poisoned and guarded)",
    "__shared__ T name[n]; -> the same, then simt::fresh_shared(name) (poisoned for each block)",
)


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def sanitize() -> bool:
    return os.environ.get("GPUGRAD_SIMT_SANITIZE", "") == "1"


def cache_dir() -> Path:
    """Where built libraries are kept: $GPUGRAD_SIMT_CACHE, ~/.cache/gpugrad-simt, or the
    temporary directory where the home directory is not writable."""
    d = Path(os.environ.get("GPUGRAD_SIMT_CACHE") or Path.home() / ".cache" / "gpugrad-simt")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        d = Path(tempfile.gettempdir()) / f"gpugrad-simt-{os.getuid()}"
        d.mkdir(parents=True, exist_ok=True)
    return d


def _cpu_has_fma() -> bool:
    try:
        return " fma " in Path("/proc/cpuinfo").read_text().replace("\n", " ")
    except OSError:
        return False


def flags() -> tuple[str, ...]:
    extra = ("-mfma", "-ffp-contract=fast") if _cpu_has_fma() else ("-ffp-contract=off",)
    return BASE_FLAGS + extra + (SANITIZE_FLAGS if sanitize() else ())


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _compile(args: list[str], out: Path) -> None:
    """Run g++ writing to a temporary name, then move it into place (atomic for parallel runs)."""
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=out.suffix)
    os.close(fd)
    try:
        proc = subprocess.run([compiler(), *args, "-o", tmp], capture_output=True, text=True)
        if proc.returncode:
            raise BuildError(f"g++ failed ({' '.join(args)}):\n{proc.stderr[-6000:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_lock = threading.Lock()


def runtime_lib() -> Path:
    """libsimt-<hash>.so: the fiber runtime, shared by every kernel module."""
    if compiler() is None:
        raise BuildError("g++ not found: the CUDA emulator needs a C++17 compiler")
    srcs = [HERE / "runtime.cpp", HERE / "half.cpp", HERE / "simt.h"]
    key = _digest(*(p.read_text() for p in srcs), *flags())
    out = cache_dir() / f"libsimt-{key}.so"
    with _lock:
        if not out.exists():
            _compile([*flags(), "-shared", f"-I{HERE}", str(srcs[0]), str(srcs[1]),
                      f"-Wl,-soname,{out.name}"], out)  # fmt: skip
    return out


def translate(code: str, name: str) -> tuple[str, list[tuple[str, int]]]:
    """The wrapper source for ``code`` and its kernels as ``[(name, max threads per block)]``."""

    def cvt(m: re.Match) -> str:
        fn = PTX_CONVERSIONS.get(m.group(1))
        if fn is None:
            raise BuildError(f"{name}: inline PTX cvt.{m.group(1)} has no emulator equivalent")
        return f"{m.group(2).strip()} = ::simt::{fn}({m.group(3).strip()});"

    src = _PTX_CVT.sub(cvt, code)
    left = re.search(r"\basm\b[^;]*;", src)
    if left:
        raise BuildError(f"{name}: inline assembly the emulator cannot run: {left.group(0)!r}")
    dyn = _EXTERN_SHARED.findall(src)
    if len({n for _, n in dyn}) > 1:
        raise BuildError(f"{name}: more than one extern __shared__ array: {dyn}")
    src = _EXTERN_SHARED.sub(lambda m: f"extern {m.group(1)}{m.group(2)}[];", src)
    src = _STATIC_SHARED.sub(
        lambda m: f"{m.group(0)} ::simt::fresh_shared(&{m.group(2)}, sizeof({m.group(2)}));", src
    )
    expanded = subprocess.run([compiler(), "-E", "-P", "-x", "c++", "-"], input=src,
                              capture_output=True, text=True)  # fmt: skip
    if expanded.returncode:
        raise BuildError(f"{name}: preprocessing failed:\n{expanded.stderr[-4000:]}")
    found = [(k, int(b) if b else 1024) for b, k in _KERNEL.findall(expanded.stdout)]
    if not found:
        raise BuildError(f'{name}: no extern "C" __global__ kernels found')
    out = ['#include "simt.h"', f'#line 1 "{name}"', src, '#include "simt_launch.h"']
    if dyn:
        sym = dyn[0][1]
        out.append(f"__attribute__((aligned(16))) unsigned char {sym}[{DYN_SMEM_CAPACITY}];")
        out.append(f"static unsigned char* const simt_dyn = (unsigned char*){sym};")
    else:
        out.append(f"static unsigned char simt_dyn[{DYN_SMEM_CAPACITY}] "
                   "__attribute__((aligned(16)));")  # fmt: skip
    for t, code_ in _HALF_TYPES.items():
        if re.search(rf"\bstruct\s+{t}\b", src):
            out.append(f"template <> struct simt::TypeCode<{t}> {{ static constexpr char kind = "
                       f"'{code_}'; }};")  # fmt: skip
    rows = ",\n".join(
        f'  {{"{k}", &simt::thunk<&{k}>, {b}, simt::Sig<decltype(&{k})>::nargs, '
        f"&simt::Sig<decltype(&{k})>::describe}}"
        for k, b in found
    )
    out.append(_WRAPPER_TAIL.replace("@ROWS@", rows).replace("@CAP@", str(DYN_SMEM_CAPACITY)))
    return "\n".join(out) + "\n", found


_WRAPPER_TAIL = r"""
extern "C" int simt_run(const char*, void (*)(void**), void**, const unsigned*, const unsigned*,
                        size_t, unsigned char*, size_t, int, unsigned long long, char*, size_t);
static const simt::KernelEntry simt_table[] = {
@ROWS@
};
#define SIMT_API extern "C" __attribute__((visibility("default")))
SIMT_API int simt_count() { return (int)(sizeof simt_table / sizeof simt_table[0]); }
SIMT_API const char* simt_name(int i) { return simt_table[i].name; }
SIMT_API int simt_max_threads(int i) { return simt_table[i].max_threads; }
SIMT_API int simt_nargs(int i) { return simt_table[i].nargs; }
SIMT_API void simt_describe(int i, simt::ArgDesc* out) { simt_table[i].describe(out); }
SIMT_API int simt_launch(int i, const unsigned* grid, const unsigned* block, size_t smem,
                         void** args, int order, unsigned long long seed, char* err,
                         size_t errlen) {
    return simt_run(simt_table[i].name, simt_table[i].entry, args, grid, block, smem, simt_dyn,
                    @CAP@, order, seed, err, errlen);
}
"""


def build_module(code: str, name: str) -> Path:
    """The cached shared library for CUDA source ``code`` (``name`` labels messages)."""
    lib = runtime_lib()
    key = _digest(code, *(p.read_text() for p in sorted(HERE.iterdir())), *flags(),
                  Path(__file__).read_text())  # fmt: skip
    out = cache_dir() / f"mod-{key}.so"
    if out.exists():
        return out
    wrapper, _ = translate(code, name)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        cpp = Path(tmp) / (Path(name).stem + ".cpp")
        cpp.write_text(wrapper)
        _compile([*flags(), "-shared", f"-I{HERE}", str(cpp), str(lib),
                  "-Wl,-rpath,$ORIGIN"], out)  # fmt: skip
    return out
