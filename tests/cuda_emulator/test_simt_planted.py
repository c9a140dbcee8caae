"""Bugs planted in a copy of a kernel (in tmp_path) must fail, run through fused_cuda's real
launch code: a missing __syncthreads, an out-of-range write, a wrong shuffle mask and a wrong
argument type. The unmodified kernels pass the same calls (test_simt_kernels)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import simt_build
import simt_cupy as cp
from _simt_cases import dev

from gpugrad.backend import kernels


@pytest.fixture()
def plant(emu, tmp_path, monkeypatch):
    """plant(family, old, new): kernels/ copied to tmp_path with ``old`` replaced by ``new`` once
    in ``<family>.cu`` (or a header), and the loader pointed there."""
    for p in kernels.kernels_dir().iterdir():
        shutil.copy(p, tmp_path / p.name)
    monkeypatch.setattr(kernels, "kernels_dir", lambda: tmp_path)
    monkeypatch.setattr(kernels, "_modules", {})
    monkeypatch.setattr(kernels, "_functions", {})
    monkeypatch.setattr(emu, "_smem_allowed", {})  # new kernel objects: their limits are unset

    def apply(file: str, old: str, new: str):
        path = tmp_path / file
        text = path.read_text()
        assert text.count(old) >= 1, f"{old!r} not in {file}"
        path.write_text(text.replace(old, new, 1))
        return emu

    return apply


def _ce(f, C: int):
    rng = np.random.default_rng(0)
    x = dev(rng.standard_normal((3, C)).astype(np.float32))
    return f.softmax_cross_entropy(x, dev(np.array([0, 1, 2])), -100, "mean", True)


def test_planted_missing_syncthreads(plant):
    f = plant("softmax_cross_entropy.cu", "        red_s[warp] = s;\n    }\n    __syncthreads();",
              "        red_s[warp] = s;\n    }")  # fmt: skip
    with pytest.raises(cp.SimtError, match=r"ce_block_f32: thread orders .* a race"):
        _ce(f, 5000)


@pytest.mark.skipif(simt_build.sanitize(), reason="aborts with AddressSanitizer's report there")
def test_planted_out_of_range_write(plant):
    f = plant("sigmoid.cu", "for (i64 i = nv * V + tid; i < n; i += stride)\n        y[i]",
              "for (i64 i = nv * V + tid; i <= n; i += stride)\n        y[i]")  # fmt: skip
    with pytest.raises(cp.SimtError, match=r"sigmoid_fwd_f32 .*out-of-range write at byte 4004 "
                                           r"\(after the 4004-byte allocation\)"):  # fmt: skip
        f.sigmoid_forward(dev(np.zeros(1001, np.float32)))


def test_planted_wrong_shuffle_mask(plant):
    f = plant("softmax_cross_entropy.cu", "__shfl_xor_sync(FULL_MASK, m, off);",
              "__shfl_xor_sync(0x0000ffffu, m, off);")  # fmt: skip
    with pytest.raises(cp.SimtError, match=r"kernel ce_\w+_f32, block .*the calling lane is not "
                                           r"in the mask"):  # fmt: skip
        _ce(f, 100)


def test_planted_wrong_argument_type(plant):
    f = plant("sigmoid.cu", "T* __restrict__ y, i64 n, int vec)",
              "T* __restrict__ y, int n, int vec)")  # fmt: skip
    with pytest.raises(TypeError, match=r"sigmoid_fwd_f32: argument 2 \(C type int\) got int64"):
        f.sigmoid_forward(dev(np.zeros(10, np.float32)))
