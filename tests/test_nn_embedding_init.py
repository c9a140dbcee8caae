"""Embedding, nn.init.trunc_normal_ / orthogonal_ and the SiLU/ELU/Softplus modules: float64
NumPy references, gradcheck, torch.nn with copied weights, seeding, and errors."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from _nn_helpers import _other, _rng, _set, _t, _to_torch, needs_torch, torch

import gpugrad as gg
import gpugrad.nn as nn
from gpugrad.nn import init
from gpugrad.nn.embedding import embedding


# -- Embedding ------------------------------------------------------------------------------------
def test_embedding_init_is_seeded_standard_normal_with_zero_padding_row(device):
    gg.manual_seed(5)
    emb = nn.Embedding(10, 3, padding_idx=-2, device=device)
    assert emb.padding_idx == 8 and emb.weight.requires_grad and emb.weight.dtype == np.float32
    ref = _rng(5).normal(size=(10, 3)).astype(np.float32)
    ref[8] = 0
    np.testing.assert_array_equal(emb.weight.numpy(), ref)
    gg.manual_seed(5)
    np.testing.assert_array_equal(nn.Embedding(10, 3, padding_idx=8).weight.numpy(), ref)
    assert list(emb.state_dict()) == ["weight"]


@pytest.mark.parametrize("idx", [[[1, 3, 3], [0, 9, 1]], 4, [7, 7, 7, 7], np.zeros((2, 0), int)])
def test_embedding_lookup_and_accumulated_gradient(device, idx):
    gg.manual_seed(0)
    emb = nn.Embedding(10, 4, device=device)
    w = emb.weight.numpy()
    idx = np.asarray(idx, dtype=np.int64)
    y = emb(_t(idx, device))
    assert y.shape == idx.shape + (4,)
    np.testing.assert_array_equal(y.numpy(), w[idx])
    g = _rng(1).normal(size=y.shape).astype(np.float32)
    (y * _t(g, device)).sum().backward()
    ref = np.zeros_like(w)
    np.add.at(ref, idx, g)  # repeated indices accumulate
    np.testing.assert_allclose(emb.weight.grad.numpy(), ref, rtol=1e-6, atol=1e-6)
    # int32 indices and plain lists work too
    np.testing.assert_array_equal(emb(idx.astype(np.int32)).numpy(), w[idx])
    np.testing.assert_array_equal(emb(idx.tolist()).numpy(), w[idx])


def test_embedding_padding_row_gets_no_gradient_but_keeps_its_values(device):
    emb = nn.Embedding(6, 3, padding_idx=2, device=device)
    _set(emb.weight, _rng(0).normal(size=(6, 3)))  # a non-zero padding row is still looked up
    w = emb.weight.numpy()
    idx = np.array([[2, 1, 2], [5, 2, 1]])
    y = emb(_t(idx, device))
    np.testing.assert_array_equal(y.numpy(), w[idx])
    g = _rng(1).normal(size=y.shape)
    (y * _t(g.astype(np.float32), device)).sum().backward()
    ref = np.zeros((6, 3))
    np.add.at(ref, idx, g)
    ref[2] = 0
    grad = emb.weight.grad.numpy()
    assert not grad[2].any()
    np.testing.assert_allclose(grad, ref, rtol=1e-6, atol=1e-6)
    # (no gradcheck here: by design the padding row's gradient is not the derivative)
    # a frozen padded embedding skips the masking and returns plain rows
    frozen = nn.Embedding.from_pretrained(emb.weight, padding_idx=2)
    assert not frozen.weight.requires_grad  # still a (frozen) parameter, as in torch
    assert [n for n, _ in frozen.named_parameters()] == ["weight"]
    np.testing.assert_array_equal(frozen(_t(idx, device)).numpy(), w[idx])


@needs_torch
@pytest.mark.parametrize("padding_idx", [None, 0, -1])
def test_embedding_matches_torch(device, padding_idx):
    gg.manual_seed(3)
    emb = nn.Embedding(7, 5, padding_idx=padding_idx, device=device)
    temb = torch.nn.Embedding(7, 5, padding_idx=padding_idx)
    assert emb.padding_idx == temb.padding_idx
    _to_torch(emb, temb)
    idx = np.array([[0, 6, 3], [6, 6, 0]])
    g = _rng(2).normal(size=(2, 3, 5)).astype(np.float32)
    y, yt = emb(_t(idx, device)), temb(torch.tensor(idx))
    np.testing.assert_array_equal(y.numpy(), yt.detach().numpy())
    (y * _t(g, device)).sum().backward()
    (yt * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(emb.weight.grad.numpy(), temb.weight.grad.numpy(), rtol=1e-6,
                               atol=1e-6)


def test_embedding_gradcheck_and_from_pretrained_training(device):
    w = _t(_rng(0).normal(size=(5, 2)), device, requires_grad=True)
    idx = _t(np.array([[4, 0], [4, 4]]), device)
    assert gg.gradcheck(lambda w: embedding(idx, w) * embedding(idx, w), [w])
    pre = gg.tensor(_rng(1).normal(size=(4, 3)), device=device)
    emb = nn.Embedding.from_pretrained(pre, freeze=False)
    assert emb.weight.requires_grad and [n for n, _ in emb.named_parameters()] == ["weight"]
    emb(_t(np.array([1, 1]), device)).sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.numpy()[1], [2, 2, 2])


@pytest.mark.parametrize("bad", [10, -1, 57])
def test_embedding_out_of_range_index_raises_value_error(device, bad):
    emb = nn.Embedding(10, 3, device=device)
    idx = np.array([[0, 9], [bad, 2]])
    with pytest.raises(ValueError, match=rf"Embedding\(10, 3\): index {bad} at position \(1, 0\)"
                                         r".*out of range \[0, 10\)"):
        emb(_t(idx, device))
    with pytest.raises(ValueError, match=rf"embedding: index {bad}.*\[0, 10\)"):
        embedding(_t(idx, device), emb.weight)


def test_embedding_type_device_and_argument_errors(device):
    emb = nn.Embedding(4, 2, device=device)
    with pytest.raises(TypeError, match="Embedding: indices must be an integer tensor.*float"):
        emb(gg.tensor([0.0, 1.0], device=device))
    with pytest.raises(TypeError, match="integer"):
        emb(gg.tensor([True, False], device=device))
    with pytest.raises(ValueError, match=r"padding_idx must be within \[-4, 4\).*got 4"):
        nn.Embedding(4, 2, padding_idx=4)
    with pytest.raises(ValueError, match="num_embeddings"):
        nn.Embedding(-1, 2)
    if device != "cpu":
        with pytest.raises(gg.DeviceError, match="indices are on cpu"):
            emb(gg.tensor([0, 1]))  # a tensor on another device is not moved silently


# -- nn.init --------------------------------------------------------------------------------------
def _cdf(x):  # erfc keeps the lower tail precise (1 + erf(x) cancels there)
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _truncnorm_moments(mean, std, a, b):
    pdf = NormalDist().pdf
    al, be = (a - mean) / std, (b - mean) / std
    z = _cdf(be) - _cdf(al)
    m = (pdf(al) - pdf(be)) / z
    xpdf = [0.0 if math.isinf(x) else x * pdf(x) for x in (al, be)]
    v = 1 + (xpdf[0] - xpdf[1]) / z - m * m
    return mean + std * m, std * math.sqrt(v)


@pytest.mark.parametrize("mean,std,a,b", [(0.0, 1.0, -2.0, 2.0), (0.0, 0.02, -0.04, 0.04),
                                          (1.0, 2.0, 2.0, 6.0), (0.0, 1.0, 4.0, 5.0),
                                          (0.0, 1.0, -9.0, -7.0), (0.5, 1.0, -math.inf, 0.0)])
def test_trunc_normal_distribution_and_seeding(device, mean, std, a, b):
    gg.manual_seed(11)
    t = init.trunc_normal_(gg.empty(200, 100, dtype=np.float64, device=device), mean, std, a, b)
    v = t.numpy()
    assert v.min() >= a and v.max() <= b
    m_ref, s_ref = _truncnorm_moments(mean, std, a, b)
    assert abs(v.mean() - m_ref) < 5 * s_ref / math.sqrt(v.size)
    assert abs(v.std() - s_ref) < 0.03 * s_ref
    # the algorithm, from the host generator's draws: inverse CDF of u ~ U(Φ(α), Φ(β)),
    # mirrored below the mean when [a, b] lies above it
    al, be = (a - mean) / std, (b - mean) / std
    sign = -1.0 if al > 0 else 1.0
    if sign < 0:
        al, be = -be, -al
    u = _rng(11).uniform(_cdf(al), _cdf(be), size=8)
    ref = [mean + std * sign * NormalDist().inv_cdf(x) for x in u]
    np.testing.assert_allclose(v.reshape(-1)[:8], ref, rtol=1e-8)
    gg.manual_seed(11)
    t32 = init.trunc_normal_(gg.empty(200, 100, device="cpu"), mean, std, a, b)
    np.testing.assert_array_equal(t32.numpy(), v.astype(np.float32))  # same draws, any device


def test_trunc_normal_and_orthogonal_errors_and_edges(device):
    t = gg.empty(3, 4, device=device)
    with pytest.raises(ValueError, match="a < b"):
        init.trunc_normal_(t, a=1.0, b=1.0)
    with pytest.raises(ValueError, match="std"):
        init.trunc_normal_(t, std=-1.0)
    np.testing.assert_array_equal(init.trunc_normal_(t, mean=3.0, std=0.0).numpy(), 2.0)
    with pytest.raises(ValueError, match=r"orthogonal_.*2 or more dims.*\(4,\)"):
        init.orthogonal_(gg.empty(4, device=device))
    assert init.orthogonal_(gg.empty(0, 3, device=device)).shape == (0, 3)


@pytest.mark.parametrize("shape", [(6, 4), (3, 7), (5, 5), (4, 2, 3)])
def test_orthogonal_is_orthogonal_seeded_and_follows_torchs_recipe(device, shape):
    gg.manual_seed(2)
    t = init.orthogonal_(gg.empty(*shape, dtype=np.float64, device=device), gain=1.5)
    q = t.numpy().reshape(shape[0], -1) / 1.5
    rows, cols = q.shape
    gram = q.T @ q if rows >= cols else q @ q.T
    np.testing.assert_allclose(gram, np.eye(min(rows, cols)), atol=1e-12)
    # torch's recipe on the host generator's draws: QR of the (transposed if wide) normal
    # matrix, columns signed by diag(R)
    a = _rng(2).normal(size=(rows, cols))
    a = a.T if rows < cols else a
    qr, r = np.linalg.qr(a)
    qr = qr * np.sign(np.diag(r))
    np.testing.assert_allclose(q, qr.T if rows < cols else qr, atol=1e-12)
    gg.manual_seed(2)
    other = init.orthogonal_(gg.empty(*shape, dtype=np.float64, device=_other(device)), 1.5)
    np.testing.assert_array_equal(other.numpy(), t.numpy())


# -- activation modules ---------------------------------------------------------------------------
def _ref_softplus(x, beta, threshold):
    z = beta * x
    return np.where(z > threshold, x, np.log1p(np.exp(np.minimum(z, threshold))) / beta)


_ACTS = [
    (nn.SiLU(), lambda x: x / (1 + np.exp(-x)), "silu"),
    (nn.ELU(), lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))), "elu"),
    (nn.ELU(alpha=0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(np.minimum(x, 0))), None),
    (nn.Softplus(), lambda x: _ref_softplus(x, 1.0, 20.0), "softplus"),
    (nn.Softplus(beta=2.0, threshold=3.0), lambda x: _ref_softplus(x, 2.0, 3.0), None),
]


@pytest.mark.parametrize("module,ref,name", _ACTS, ids=[repr(a[0]) for a in _ACTS])
def test_activation_modules_forward_gradcheck_and_registry(device, module, ref, name):
    x = np.concatenate([_rng(0).normal(0, 3, size=10), [-30.0, -0.7, 0.4, 1.6, 30.0]])
    np.testing.assert_allclose(module(_t(x, device)).numpy(), ref(x), rtol=1e-12, atol=1e-12)
    y32 = module(_t(x.astype(np.float32), device))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32.numpy(), ref(x), rtol=1e-5, atol=1e-6)
    away = x[np.abs(x * 2.0 - 3.0) > 0.1]  # off Softplus(beta=2, threshold=3)'s switch point
    assert gg.gradcheck(module, [_t(away, device, requires_grad=True)])
    if name is not None:
        assert nn.ACTIVATIONS[name] is type(module)
        mlp = nn.MLP([3, 4, 2], activation=name, device=device)
        assert type(mlp[1]) is type(module)
        assert getattr(gg.functional, name) is getattr(gg.ops, name)


@needs_torch
@pytest.mark.parametrize("make,tmake", [
    (nn.SiLU, torch.nn.SiLU if torch else None),
    (lambda: nn.ELU(0.7), lambda: torch.nn.ELU(0.7)),
    (nn.Softplus, torch.nn.Softplus if torch else None),
    (lambda: nn.Softplus(0.5, 4.0), lambda: torch.nn.Softplus(0.5, 4.0)),
])
def test_activation_modules_match_torch(device, make, tmake):
    m, tm = make(), tmake()
    assert repr(m) == repr(tm)
    x = np.concatenate([_rng(1).normal(0, 4, size=20), [-1000.0, -0.0, 0.0, 1000.0]])
    x = x.astype(np.float32)
    xg, xt = _t(x, device, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, yt = m(xg), tm(xt)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-6, atol=1e-6)
    y.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(xg.grad.numpy(), xt.grad.numpy(), rtol=1e-6, atol=1e-6)
