"""Kernel checks that need no GPU (they run in CI).

1. Every kernels/*.cu compiles with NVRTC for every architecture in kernels.CHECK_ARCHES (sm_75
   to sm_120) with no error, warning or register spill (the same check as tools/check_kernels.py),
   as the text CuPy gets: its "*.cuh" headers pasted in by kernels.expand_source, which accepts no
   other include.
2. Every launch in fused_cuda matches its kernel's C signature: fused_cuda runs against a fake
   cupy (numpy-backed arrays with host addresses) whose kernels check each argument's C type (and
   a pointer's element type), the block size against __launch_bounds__, the dynamic shared memory
   against the limit the launcher raised, and the optimizer pointer tables against the arrays.
"""

from __future__ import annotations

import os
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from _backend_loader import load_backend_module

from gpugrad.backend import checks, fused_reference, kernels

FILES = [kernels.kernel_path(family) for family in kernels.families()]


def _nvrtc_or_skip() -> None:
    """NVRTC comes with the `kernels` extra (nvidia-cuda-nvrtc + cuda-bindings). Without it the
    compile checks skip, except where GPUGRAD_REQUIRE_NVRTC=1 (.ci/run sets it): there a missing
    compiler fails instead of silently skipping. macOS has no NVRTC wheels."""
    try:
        kernels.nvrtc_binding()
    except RuntimeError as exc:
        if sys.platform == "darwin" or os.environ.get("GPUGRAD_REQUIRE_NVRTC") != "1":
            pytest.skip(f"no NVRTC (pip install '.[kernels]'): {exc}")
        raise


@pytest.mark.parametrize("arch", kernels.CHECK_ARCHES)
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_kernel_compiles(path, arch):
    _nvrtc_or_skip()
    ok, log = kernels.compile_check(path, arch)
    assert ok, f"{path.name} for {arch}:\n{log}"


def test_check_arches_are_supported_by_this_nvrtc():
    _nvrtc_or_skip()
    if kernels.nvrtc_binding() != "cuda-bindings":
        pytest.skip("the supported-architecture query needs cuda-bindings")
    from cuda.bindings import nvrtc

    err, supported = nvrtc.nvrtcGetSupportedArchs()
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS
    wanted = {int(a.removeprefix("sm_")) for a in kernels.CHECK_ARCHES}
    assert wanted <= set(supported), (sorted(wanted - set(supported)), kernels.nvrtc_version())
    assert {75, 80, 86, 89, 90, 100, 120} <= wanted


def test_compile_check_fails_on_register_spills(tmp_path):
    _nvrtc_or_skip()
    src = tmp_path / "spill.cu"
    src.write_text(
        'extern "C" __global__ void __launch_bounds__(1024, 2) '
        "spill(const double* x, double* y) {\n"
        "    double a[24];\n#pragma unroll\n"
        "    for (int k = 0; k < 24; ++k) a[k] = x[threadIdx.x + k * 1024];\n"
        "    double s = 0;\n#pragma unroll\n"
        "    for (int k = 0; k < 24; ++k) s += exp(a[k]) * a[(k * 7) % 24];\n"
        "    y[threadIdx.x] = s;\n}\n")  # fmt: skip
    ok, log = kernels.compile_check(src, "sm_80")
    assert not ok and "spilled" in log, log


def test_kernel_files_found():
    assert kernels.families() == ["bce_with_logits", "optimizers", "scatter_add", "sigmoid",
                                  "softmax_cross_entropy"]  # fmt: skip
    assert (kernels.kernels_dir() / "common.cuh").is_file()  # a header, not a family
    src = kernels.read_source("sigmoid")
    assert 'extern "C"' in src and "struct half_t" in src
    assert not re.search(r"^\s*#\s*include", src, re.M)
    with pytest.raises(FileNotFoundError, match="nope.cu"):
        kernels.kernel_path("nope")


def test_expand_source_pastes_local_headers(tmp_path):
    (tmp_path / "a.cuh").write_text('#include "b.cuh"\nint a;\n')
    (tmp_path / "b.cuh").write_text("int b;")  # no final newline
    (tmp_path / "k.cu").write_text('// k\n  # include "a.cuh"  // helpers\nint k;\n')
    assert kernels.expand_source(tmp_path / "k.cu") == (
        '// k\n#line 1 "a.cuh"\n#line 1 "b.cuh"\nint b;\n#line 2 "a.cuh"\nint a;\n'
        '#line 3 "k.cu"\nint k;\n')  # fmt: skip
    (tmp_path / "b.cuh").write_text("int b2;")  # a header edit changes the text (CuPy's cache key)
    assert "int b2;" in kernels.expand_source(tmp_path / "k.cu")
    (tmp_path / "plain.cu").write_text("int x;\n// #include <nothing.h>\n")
    assert kernels.expand_source(tmp_path / "plain.cu") == "int x;\n// #include <nothing.h>\n"


@pytest.mark.parametrize(
    "line,needle",
    [
        ("#include <cuda_fp16.h>", "unsupported"),
        ('#include "sub/x.cuh"', "unsupported"),
        ('#include "../x.cuh"', "unsupported"),
        ('#include "x.h"', "unsupported"),
        ("#include GPUGRAD_HEADER", "unsupported"),
        ("#include_next <math.h>", "unsupported"),
        ('#include "missing.cuh"', "missing.cuh not found"),
        ('#include "loop.cuh"', "include cycle k.cu -> loop.cuh -> loop.cuh"),
    ],
)
def test_expand_source_rejects_other_includes(tmp_path, line, needle):
    (tmp_path / "x.h").write_text("int x;\n")
    (tmp_path / "loop.cuh").write_text('#include "loop.cuh"\n')
    (tmp_path / "k.cu").write_text(f"int k;\n{line}\n")
    with pytest.raises(kernels.IncludeError, match=re.escape(needle)):
        kernels.expand_source(tmp_path / "k.cu")
    ok, log = kernels.compile_check(tmp_path / "k.cu", "sm_80")  # reported, not raised
    assert not ok and needle in log


def test_compile_errors_name_the_header_and_line(tmp_path):
    _nvrtc_or_skip()
    (tmp_path / "h.cuh").write_text("// helper\n__device__ int h() { return undefined_h; }\n")
    kernel = 'extern "C" __global__ void k(int* y) { y[0] = undefined_k; }'
    (tmp_path / "k.cu").write_text(f'// kernel\n#include "h.cuh"\n\n{kernel}\n')
    ok, log = kernels.compile_check(tmp_path / "k.cu", "sm_80")
    assert not ok and "h.cuh(2)" in log and "k.cu(4)" in log, log


@pytest.mark.parametrize(
    "body,needle",
    [("float f = INFINITY; y[0] = f;", "INFINITY"), ("int unused; y[0] = 1.0f;", "unused")],
)
def test_compile_check_fails_on_errors_and_warnings(tmp_path, body, needle):
    _nvrtc_or_skip()
    src = tmp_path / "bad.cu"
    src.write_text(f'extern "C" __global__ void k(float* y) {{ {body} }}\n')
    ok, log = kernels.compile_check(src, "sm_80")
    assert not ok and needle in log


# ---------------------------------------------------------------------------------------------
# signatures, parsed from the sources (macro instantiations expanded)

_C_SCALAR = {"i64": np.int64, "long long": np.int64, "int": np.int32, "float": np.float32,
             "double": np.float64}  # fmt: skip
_C_ELEM = {**_C_SCALAR, "half_t": np.float16, "bf16_t": None}


def signatures(family: str) -> dict[str, tuple[int, list[tuple[bool, str]]]]:
    """kernel name -> (max threads per block, [(is_pointer, C type)])."""
    src = kernels.read_source(family).replace("\\\n", " ")
    out = {}
    for m in re.finditer(r"#define (\w+)\(([^)]*)\)(.*)", src):
        macro, names, body = m.group(1), [s.strip() for s in m.group(2).split(",")], m.group(3)
        for inst in re.finditer(rf"^{macro}\(([^)]*)\)", src, re.M):
            text = body
            for name, value in zip(names, [s.strip() for s in inst.group(1).split(",")]):
                text = re.sub(rf"(##)?\b{name}\b", value, text)
            for k in re.finditer(
                r'extern "C" __global__ void __launch_bounds__\((\d+)[^)]*\)\s*(\w+)\(([^)]*)\)',
                text,
            ):
                params = []
                for p in k.group(3).split(","):
                    words = p.replace("*", " * ").replace("const", "").replace("__restrict__", "")
                    words = words.split()
                    ctype = " ".join(w for w in words[:-1] if w != "*")
                    params.append(("*" in words, ctype))
                out[k.group(2)] = (int(k.group(1)), params)
    assert out, f"no kernels parsed from {family}"
    return out


class FakeArray(np.ndarray):
    """A numpy array dressed as a cupy array (device 0, .data.ptr, .get(), 0-d indexing)."""

    @property
    def device(self):
        return FakeDevice(0)

    @property
    def data(self):
        return SimpleNamespace(ptr=self.__array_interface__["data"][0])

    def get(self):
        return np.array(self)

    def __getitem__(self, key):
        r = super().__getitem__(key)
        return r if isinstance(r, np.ndarray) else np.asarray(r).view(FakeArray)


class FakeDevice:
    attributes = {"MultiProcessorCount": 132, "MaxThreadsPerMultiProcessor": 2048,
                  "MaxSharedMemoryPerBlockOptin": 232448}  # fmt: skip

    def __init__(self, index=0):
        self.id = index

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Recorder:
    def __init__(self):
        self.sigs = {}
        for fam in kernels.families():
            self.sigs.update(signatures(fam))
        self.launches = []
        self.uploads = 0
        self.kernels = {}

    def get_function(self, family, name, device_id):
        assert name in self.sigs, f"{name} is not a kernel in {family}.cu"
        if name not in self.kernels:  # cached per name, like kernels.get_function
            self.kernels[name] = FakeKernel(self, name)
        return self.kernels[name]


class FakeKernel:
    def __init__(self, rec, name):
        self.rec, self.name = rec, name
        # the driver's default: 48 KiB minus the kernel's static shared memory (at most 1 KiB here)
        self.max_dynamic_shared_size_bytes = 48 * 1024 - 1024

    def __call__(self, grid, block, args, shared_mem=0):
        bound, params = self.rec.sigs[self.name]
        assert len(args) == len(params), (self.name, len(args), len(params))
        for i, (arg, (is_ptr, ctype)) in enumerate(zip(args, params)):
            where = f"{self.name} arg {i} ({ctype}{' *' if is_ptr else ''})"
            if is_ptr:
                if isinstance(arg, np.uint64):
                    assert arg == 0, where  # the null pointer
                    continue
                assert isinstance(arg, FakeArray), (where, type(arg))
                assert arg.flags.c_contiguous, where
                want = _C_ELEM[ctype]
                assert want is None or arg.dtype == want, (where, arg.dtype)
            else:
                assert type(arg) is _C_SCALAR[ctype], (where, type(arg))
        assert 1 <= grid[0] <= 2**31 - 1 and block[0] % 32 == 0 and block[0] <= bound, (
            self.name, grid, block, bound)  # fmt: skip
        assert shared_mem <= self.max_dynamic_shared_size_bytes, (self.name, shared_mem)
        self.rec.launches.append((self.name, grid[0], block[0], shared_mem, args))
        if self.name.startswith("ce_finalize"):  # the one kernel whose result the host reads
            labels, n, c, ignore, meta = args[0], int(args[1]), int(args[2]), int(args[3]), args[7]
            lab = np.asarray(labels)
            bad = np.flatnonzero((lab != ignore) & ((lab < 0) | (lab >= c)))
            meta[0], meta[1] = int((lab != ignore).sum()), bad[0] if bad.size else n


@pytest.fixture()
def fake():
    rec = Recorder()

    def asarray(a, dtype=None):
        rec.uploads += 1
        return np.array(a, dtype=dtype).view(FakeArray)

    cupy = SimpleNamespace(
        ndarray=FakeArray,
        empty=lambda shape, dtype=np.float64: np.zeros(shape, dtype).view(FakeArray),
        zeros=lambda shape, dtype=np.float64: np.zeros(shape, dtype).view(FakeArray),
        full=lambda shape, v, dtype=None: np.full(shape, v, dtype).view(FakeArray),
        asarray=asarray,
        ascontiguousarray=lambda a: np.ascontiguousarray(a).view(FakeArray),
        minimum=lambda a, b: np.minimum(a, b).view(FakeArray),
        concatenate=lambda arrays: np.concatenate(arrays).view(FakeArray),
        cuda=SimpleNamespace(Device=FakeDevice),
    )
    # A fresh fused_cuda (and cupy-importing sibling) bound to the fake cupy
    mod = load_backend_module("fused_cuda", cupy, "_fused_cuda_fake")
    mod.kernels = rec
    rec.mod = mod
    return rec


def dev_array(a):
    return np.array(a).view(FakeArray)


def offset_view(a):
    buf = np.concatenate([np.zeros(1, a.dtype), a.ravel()]).view(FakeArray)
    return buf[1:].reshape(a.shape)


def test_launch_sigmoid(fake):
    f = fake.mod
    x = np.random.default_rng(0).standard_normal(1001).astype(np.float32)
    f.sigmoid_forward(dev_array(x))
    f.sigmoid_forward(offset_view(x))
    f.sigmoid_backward(dev_array(x.astype(np.float16)), dev_array(x))
    f.sigmoid_forward(dev_array(np.float64(2.0)))
    names = [(n, int(a[-1])) for n, _, _, _, a in fake.launches]
    assert names == [("sigmoid_fwd_f32", 1), ("sigmoid_fwd_f32", 0), ("sigmoid_bwd_f16", 1),
                     ("sigmoid_fwd_f64", 1)]  # fmt: skip
    assert f.sigmoid_forward(dev_array(np.float32(1.0))).shape == ()


@pytest.mark.parametrize(
    "C", [0, 1, 2, 10, 31, 33, 1000, 1027, 4096, 12000, 12288, 32768, 100000, 262144]
)
@pytest.mark.parametrize("N", [1, 3000])
def test_launch_cross_entropy(fake, N, C):
    if N * C > 2**24:
        N = 2
    f = fake.mod
    x = dev_array(np.zeros((N, C), np.float32))
    labels = dev_array(np.full(N, -100 if C == 0 else C - 1))
    for red in ("mean", "sum", "none"):
        fake.launches.clear()
        loss, grad = f.softmax_cross_entropy(x, labels, -100, red, True)
        assert grad.shape == (N, C) and loss.shape == ((N,) if red == "none" else ())
        rows = [launch for launch in fake.launches if not launch[0].startswith("ce_finalize")]
        assert len(rows) == 1
        name, grid, block, smem, args = rows[0]
        if C <= 32:
            W = int(args[4])
            assert name == "ce_small_f32" and C <= W <= 32 and W & (W - 1) == 0
            assert grid * (block // 32) * (32 // W) >= N
        elif C <= 1024:
            assert name == "ce_warp_f32" and grid * block // 32 >= N and smem > 0
        else:
            assert name == "ce_block_f32" and grid == N and 128 <= block <= 1024
            assert (smem > 0) == (C * 4 <= 232448 - 1024), smem
        # counting rows up front only when a mean gradient needs it and blocks can't cheaply
        count_ptr = args[11] if name == "ce_small_f32" else args[10]
        prepass = len(fake.launches) == 3
        assert prepass == (red == "mean" and isinstance(count_ptr, FakeArray))
        assert prepass == (red == "mean" and N * grid > 2**18)  # else blocks count the labels
        f.softmax_cross_entropy_backward(x, labels, -100, red, dev_array(np.ones(N if red ==
                                         "none" else (), np.float32)))  # fmt: skip


def test_launch_cross_entropy_errors_and_dtypes(fake):
    f = fake.mod
    x = dev_array(np.zeros((5, 7), np.float64))
    f.softmax_cross_entropy(x, dev_array([0, 1, 9, 3, -100]), -100, "mean", False)
    with pytest.raises(ValueError, match=r"label 9 at row 2 .*N=5, C=7"):  # deferred check
        checks.flush(("cuda", 0), lambda arrays: [np.asarray(a) for a in arrays])
    loss, grad = f.softmax_cross_entropy(
        dev_array(np.zeros((5, 7), np.float16)), dev_array(np.arange(5, dtype=np.int32)), -100,
        "sum", True)  # fmt: skip
    assert loss.dtype == np.float16 and grad.dtype == np.float16
    assert fake.launches[-2][0] == "ce_small_f32"  # half logits run the float32 kernels
    with pytest.raises(ValueError, match="cross_entropy backward: gy shape"):
        f.softmax_cross_entropy_backward(x, dev_array(np.zeros(5, np.int64)), -100, "none",
                                         dev_array(np.ones(4)))  # fmt: skip


@pytest.mark.parametrize("n", [1, 7, 4096, 1_000_003])
def test_launch_bce(fake, n):
    f = fake.mod
    z = dev_array(np.zeros(n, np.float32))
    for red in ("mean", "sum", "none"):
        fake.launches.clear()
        loss, grad = f.bce_with_logits(z, z, red, True)
        assert loss.shape == ((n,) if red == "none" else ()) and grad.shape == (n,)
        names = [launch[0] for launch in fake.launches]
        assert names == (["bce_f32"] if red == "none" else ["bce_f32", "bce_finalize_f32"])
        if red != "none":
            partials = fake.launches[0][4][8]
            assert partials.size == fake.launches[0][1] <= 1024 and fake.launches[1][1] == 1
        f.bce_with_logits_backward(offset_view(np.zeros(n, np.float64)), z, red,
                                   dev_array(np.ones(n if red == "none" else ())))  # fmt: skip
        assert fake.launches[-1][0] == "bce_f64" and int(fake.launches[-1][4][-1]) == 0


def _check_table(rec, launch, columns, grads):
    name, grid, block, _, args = launch
    tab, gtab, sizes, blocks, chunk = args[:5]
    K = len(grads)
    assert tab.shape == (K, len(columns)) and gtab.shape == (K,) and grid == blocks.shape[0]
    for k in range(K):
        for j, col in enumerate(columns):
            assert tab[k, j] == (0 if col[k] is None else col[k].data.ptr)
        assert gtab[k] == grads[k].data.ptr and sizes[k] == grads[k].size
    covered = [np.zeros(g.size, int) for g in grads]
    for k, start in np.asarray(blocks):
        covered[k][start : start + int(chunk)] += 1
    assert all((c == 1).all() for c in covered)  # every element exactly once


def test_launch_optimizers_pointer_tables(fake):
    f = fake.mod
    rng = np.random.default_rng(0)
    shapes = [(784, 512), (512,), (512, 512), (512,), (512, 10), (10,), (0,)]
    ps = [dev_array(rng.standard_normal(s).astype(np.float32)) for s in shapes]
    ms = [dev_array(np.zeros(s, np.float32)) for s in shapes]
    vs = [dev_array(np.zeros(s, np.float32)) for s in shapes]
    kw = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=True)
    gs = [dev_array(np.ones(s, np.float32)) for s in shapes]
    f.adam_step(ps, gs, ms, vs, step=1, **kw)
    assert [launch[0] for launch in fake.launches] == ["adam_step_f32"]  # one launch for all
    _check_table(fake, fake.launches[0], [ps[:-1], ms[:-1], vs[:-1]], gs[:-1])
    uploads = fake.uploads
    f.adam_step(ps, gs, ms, vs, step=2, **kw)
    assert fake.uploads == uploads  # tables cached while the arrays stay the same
    gs2 = [dev_array(np.ones(s, np.float32)) for s in shapes]
    f.adam_step(ps, gs2, ms, vs, step=3, **kw)
    assert fake.uploads == uploads + 1  # new gradient arrays: only their table is re-uploaded
    _check_table(fake, fake.launches[-1], [ps[:-1], ms[:-1], vs[:-1]], gs2[:-1])
    fake.launches.clear()
    mixed = [ps[1], dev_array(np.zeros(7, np.float64)), dev_array(np.zeros(9, np.float16))]
    grads = [dev_array(np.zeros_like(np.asarray(p))) for p in mixed]
    f.sgd_step(mixed, grads, [], lr=0.1, momentum=0.0, dampening=0.0, nesterov=False,
               weight_decay=0.0, first_step=True)  # fmt: skip
    assert sorted(launch[0] for launch in fake.launches) == ["sgd_step_f16", "sgd_step_f32",
                                                            "sgd_step_f64"]  # fmt: skip
    for launch in fake.launches:
        k = {"sgd_step_f32": 0, "sgd_step_f64": 1, "sgd_step_f16": 2}[launch[0]]
        _check_table(fake, launch, [[mixed[k]], [None]], [grads[k]])
    with pytest.raises(ValueError, match="C-contiguous"):
        f.sgd_step([dev_array(np.zeros((4, 4)))[:, ::2]], [dev_array(np.zeros((4, 2)))], [],
                   lr=0.1, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
                   first_step=True)  # fmt: skip


def test_fused_modules_share_signatures(fake):
    import inspect

    public = [n for n, v in vars(fused_reference).items() if inspect.isfunction(v)
              and not n.startswith("_") and v.__module__ == fused_reference.__name__]  # fmt: skip
    assert len(public) == 8
    for name in public:
        assert inspect.signature(getattr(fake.mod, name)).parameters.keys() == inspect.signature(
            getattr(fused_reference, name)).parameters.keys(), name  # fmt: skip


def test_runtime_compile_error_names_the_file(monkeypatch):
    """kernels.get_function turns CuPy's CompileException into a RuntimeError with the log."""

    class CompileException(Exception):
        def get_message(self):
            return 'kern.cu(3): error: identifier "INFINITY" is undefined'

    class RawModule:
        def __init__(self, code, options):
            assert 'extern "C"' in code and options == kernels.NVRTC_OPTIONS

        def get_function(self, name):
            raise CompileException()

    cuda = SimpleNamespace(Device=FakeDevice, compiler=SimpleNamespace(
        CompileException=CompileException))  # fmt: skip
    monkeypatch.setitem(sys.modules, "cupy", SimpleNamespace(RawModule=RawModule, cuda=cuda))
    monkeypatch.setattr(kernels, "_modules", {})
    monkeypatch.setattr(kernels, "_functions", {})
    with pytest.raises(RuntimeError, match=r"sigmoid\.cu[\s\S]*INFINITY"):
        kernels.get_function("sigmoid", "sigmoid_fwd_f32", 0)
