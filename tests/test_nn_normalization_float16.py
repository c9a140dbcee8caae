"""LayerNorm and BatchNorm1d on float16 inputs: statistics computed in float32 (within a few
float16 ulps of the float64 reference) on every device, and torch.nn's float16 results."""

from __future__ import annotations

import numpy as np
from _nn_helpers import (
    _rng,
    _set,
    _t,
    needs_torch,
    ref_batch_stats,
    ref_layer_norm,
    torch,
)

import gpugrad.nn as nn
from gpugrad.nn.normalization import layer_norm


def _f16_ulps(a, b):
    """Distance in float16 units in the last place."""
    ai, bi = (np.asarray(v, dtype=np.float16).view(np.int16).astype(np.int64) for v in (a, b))
    ai, bi = (np.where(v < 0, -32768 - v, v) for v in (ai, bi))
    return int(np.abs(ai - bi).max())


def test_layer_norm_float16_is_computed_in_float32(device):
    """(x - mean)² overflows float16 once |x - mean| > 256: the statistics are float32, as in
    torch, and the result comes back as float16."""
    x = _t(np.array([[-300.0, 0.0, 300.0, 10.0]], dtype=np.float16), device, requires_grad=True)
    y = layer_norm(x, (4,))
    assert y.dtype == np.float16
    ref = ref_layer_norm(x.numpy().astype(np.float64), 1)
    assert _f16_ulps(y.numpy(), ref) == 0  # [-1.426, -0.01178, 1.402, 0.03534]
    y.sum().backward()
    assert x.grad.dtype == np.float16 and np.isfinite(x.grad.numpy()).all()
    xs = (_rng(0).normal(size=(16, 8)) * 300 + 50).astype(np.float16)
    w = _rng(1).normal(size=8).astype(np.float16)
    b = _rng(2).normal(size=8).astype(np.float16)
    ln = nn.LayerNorm(8, device=device, dtype=np.float16)
    _set(ln.weight, w)
    _set(ln.bias, b)
    out = ln(_t(xs, device))
    assert out.dtype == np.float16
    ref = ref_layer_norm(xs.astype(np.float64), 1, w.astype(np.float64), b.astype(np.float64))
    assert _f16_ulps(out.numpy(), ref) <= 1
    # float32 parameters (torch's mixed type): float16 out, the same values
    ln32 = nn.LayerNorm(8, device=device)
    _set(ln32.weight, w)
    _set(ln32.bias, b)
    out32 = ln32(_t(xs, device))
    assert out32.dtype == np.float16
    np.testing.assert_array_equal(out32.numpy(), out.numpy())


def test_batch_norm_float16_is_computed_in_float32(device):
    bn = nn.BatchNorm1d(4, device=device, dtype=np.float16)
    rm, rv = np.zeros(4), np.ones(4)
    for step in range(3):
        x = (_rng(step).normal(size=(8, 4)) * 300 + 100 * step).astype(np.float16)
        y = bn(_t(x, device))
        assert y.dtype == np.float16 and bn.running_var.dtype == np.float16
        x64 = x.astype(np.float64)
        mu, var, unb = ref_batch_stats(x64)
        ref = (x64 - mu) / np.sqrt(var + 1e-5)
        np.testing.assert_allclose(y.numpy().astype(np.float64), ref, rtol=0, atol=2e-3)
        rm, rv = 0.9 * rm + 0.1 * mu, 0.9 * rv + 0.1 * unb
        assert np.isfinite(bn.running_var.numpy()).all()
        np.testing.assert_allclose(bn.running_mean.numpy(), rm, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(bn.running_var.numpy(), rv, rtol=1e-3)
    bn.eval()
    x = (_rng(9).normal(size=(8, 4)) * 300).astype(np.float16)
    y = bn(_t(x, device))
    rmh, rvh = bn.running_mean.numpy().astype(np.float64), bn.running_var.numpy().astype(np.float64)
    assert y.dtype == np.float16
    assert _f16_ulps(y.numpy(), (x.astype(np.float64) - rmh) / np.sqrt(rvh + 1e-5)) <= 1


@needs_torch
def test_float16_layer_norm_and_batch_norm_match_torch(device):
    x = np.array([[-300.0, 0.0, 300.0, 10.0]], dtype=np.float16)
    np.testing.assert_array_equal(layer_norm(_t(x, device), (4,)).numpy(),
                                  torch.nn.functional.layer_norm(torch.tensor(x), (4,)).numpy())
    bn = nn.BatchNorm1d(4, device=device, dtype=np.float16)
    tbn = torch.nn.BatchNorm1d(4).half()
    for step in range(3):
        x = (_rng(step).normal(size=(8, 4)) * 300 + 100 * step).astype(np.float16)
        y, yt = bn(_t(x, device)).numpy(), tbn(torch.tensor(x)).detach().numpy()
        # torch transforms as x·a + b (a = invstd·w, b = bias - mean·a): a float16 ulp apart
        np.testing.assert_allclose(y.astype(np.float32), yt.astype(np.float32), rtol=0,
                                   atol=2e-3)
        for k, v in tbn.state_dict().items():
            got, want = bn.state_dict()[k].numpy(), v.numpy()
            assert got.dtype == want.dtype, k
            if k == "num_batches_tracked":
                assert got == want
            else:
                assert _f16_ulps(got, want) <= 1, (k, got, want)
    bn.eval()
    tbn.eval()
    x = (_rng(9).normal(size=(8, 4)) * 300).astype(np.float16)
    assert _f16_ulps(bn(_t(x, device)).numpy(), tbn(torch.tensor(x)).detach().numpy()) <= 1
