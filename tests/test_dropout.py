"""Dropout: masks against an independent re-implementation of the hash, scaling, modes, errors,
gradients (first and second order), seeding, the MLP option, and CPU == CUDA bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.functional as F
import gpugrad.nn as nn
from gpugrad.backend import random_bits

# -- the reference: written from the spec, not from gpugrad's code ------------------------------
# h(i) = lowbias32(lowbias32(i ^ lo) ^ hi); keep when h >= round(p * 2**32). Python ints (exact,
# masked to 32 bits) for single values, uint64 arrays with explicit masking for whole tensors --
# neither relies on uint32 wrap-around, which is what the library uses.
_U32 = 0xFFFFFFFF


def lowbias32_int(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _U32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _U32
    x ^= x >> 16
    return x


def lowbias32_u64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & np.uint64(_U32)  # < 2**64: exact in uint64
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & np.uint64(_U32)
    x ^= x >> np.uint64(16)
    return x


def ref_keep(shape, p: float, key) -> np.ndarray:
    lo, hi = (np.uint64(k) for k in key)
    i = np.arange(int(np.prod(shape)), dtype=np.uint64)
    h = lowbias32_u64(lowbias32_u64(i ^ lo) ^ hi)
    return (h >= np.uint64(round(p * 2**32))).reshape(shape)


def key_after_seed(seed: int) -> tuple[int, int]:
    """The key ``F.dropout`` draws as the first thing after ``gg.manual_seed(seed)``."""
    lo, hi = np.random.default_rng(seed).integers(0, 2**32, size=2, dtype=np.uint64)
    return int(lo), int(hi)


def backend_mask(device: str, shape, p: float, key) -> np.ndarray:
    dev = gg.device(device)
    with dev.activate():
        m = random_bits.keep_mask(dev.xp, shape, p, key)
        return dev.backend.to_host(m)


# -- the hash and the mask ----------------------------------------------------------------------
def test_reference_hash_known_values():
    # Pins the reference itself: lowbias32(0) = 0, and a value worked out by hand-checked ints.
    assert lowbias32_int(0) == 0
    assert int(lowbias32_u64(np.array([1, 12345, _U32]))[1]) == lowbias32_int(12345)
    assert [lowbias32_int(v) for v in (1, _U32)] == [int(v) for v in
                                                      lowbias32_u64(np.array([1, _U32]))]


@pytest.mark.parametrize("p", [0.3, 0.97])
@pytest.mark.parametrize("shape", [(), (1,), (3, 257), (2, 3, 4), (3, 2**16 + 5), (0, 4)])
def test_backend_mask_equals_reference_bit_for_bit(device, shape, p):
    key = (0x9E3779B9, 0xDEADBEEF)
    got = backend_mask(device, shape, p, key)  # (3, 2**16 + 5) spans the CPU's blocks
    assert got.dtype == np.bool_ and got.shape == shape
    np.testing.assert_array_equal(got, ref_keep(shape, p, key))


def test_backend_hashes_equal_python_ints(device):
    dev = gg.device(device)
    key = (7, 2**32 - 3)
    with dev.activate():
        h = dev.backend.to_host(random_bits.hash_bits(dev.xp, 2**32 - 300, 300, key))
    expected = [lowbias32_int(lowbias32_int(i ^ key[0]) ^ key[1])
                for i in range(2**32 - 300, 2**32)]
    assert h.dtype == np.uint32 and h.tolist() == expected


@pytest.mark.skipif(not gg.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_masks_identical():
    for shape, p in (((129, 515), 0.5), ((2**18 + 3,), 0.1), ((64, 64), 0.97)):
        np.testing.assert_array_equal(backend_mask("cpu", shape, p, (11, 22)),
                                      backend_mask("cuda", shape, p, (11, 22)))
    x = np.random.default_rng(0).standard_normal((300, 77)).astype(np.float32)
    outs = []
    for dev in ("cpu", "cuda"):
        gg.manual_seed(123)
        t = gg.tensor(x, device=dev, requires_grad=True)
        y = F.dropout(t, 0.4)
        y.backward(gg.ones_like(y))
        outs.append((y.numpy(), t.grad.numpy()))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])  # same bits, not just close
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


def test_threshold_edges():
    assert random_bits.threshold(0.0) == 0
    assert random_bits.threshold(0.25) == 2**30
    assert random_bits.threshold(1 - 2**-40) == 2**32  # rounds up: drop everything, no overflow
    m = backend_mask("cpu", (1000,), 1 - 2**-40, (1, 2))
    assert not m.any()


# -- forward ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_values_match_reference(device, dtype):
    x = np.random.default_rng(1).standard_normal((40, 33)).astype(dtype)
    gg.manual_seed(5)
    y = F.dropout(gg.tensor(x, device=device), p=0.3).numpy()
    keep = ref_keep(x.shape, 0.3, key_after_seed(5))
    assert y.dtype == dtype
    np.testing.assert_array_equal(y == 0, ~keep)  # x has no zeros: zeros are exactly the drops
    np.testing.assert_allclose(y, x.astype(np.float64) * keep / 0.7, rtol=2e-7 if dtype ==
                               np.float32 else 1e-15)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_fraction_close_to_p_and_kept_scaled(device, p):
    gg.manual_seed(0)
    y = F.dropout(gg.ones(200_000, device=device), p).numpy()
    # The seed is fixed, so this is deterministic; 0.01 is >= 9 standard deviations anyway.
    assert abs((y == 0).mean() - p) < 0.01
    np.testing.assert_array_equal(np.unique(y), np.array([0, 1 / (1 - p)], dtype=np.float32))


def test_non_contiguous_and_broadcast_views(device):
    x = np.arange(1, 61, dtype=np.float32).reshape(6, 10)
    gg.manual_seed(2)
    y = F.dropout(gg.tensor(x, device=device).T, 0.5).numpy()  # mask is over the (10, 6) view
    keep = ref_keep((10, 6), 0.5, key_after_seed(2))
    np.testing.assert_array_equal(y, x.T * keep * np.float32(2))


def test_eval_and_p0_return_the_input_and_leave_the_stream_alone(device):
    x = gg.ones(4, 5, device=device, requires_grad=True)
    gg.manual_seed(9)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    d = nn.Dropout(0.5).eval()
    assert d(x) is x
    after = gg.randn(3).numpy()
    gg.manual_seed(9)
    np.testing.assert_array_equal(after, gg.randn(3).numpy())  # no key was drawn


def test_module_train_mode_drops(device):
    d = nn.Dropout(0.25)
    assert d.training and repr(d) == "Dropout(p=0.25)"
    gg.manual_seed(4)
    y = d(gg.ones(50, 40, device=device)).numpy()
    np.testing.assert_array_equal(y, ref_keep((50, 40), 0.25, key_after_seed(4)) / np.float32(0.75))
    d.eval()
    d.train()
    assert d(gg.ones(3, device=device)).numpy().max() > 1  # active again


def test_p1_gives_zeros_and_zero_gradient(device):
    x = gg.tensor(np.linspace(-3, 3, 12).reshape(3, 4), device=device, requires_grad=True)
    y = F.dropout(x, 1.0)
    np.testing.assert_array_equal(y.numpy(), np.zeros((3, 4), np.float32))
    y.backward(gg.ones_like(y))
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((3, 4), np.float32))


def test_same_seed_same_mask_next_call_differs(device):
    x = gg.ones(64, 64, device=device)
    gg.manual_seed(3)
    a, b = F.dropout(x, 0.5).numpy(), F.dropout(x, 0.5).numpy()
    gg.manual_seed(3)
    a2 = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, a2)
    assert (a != b).mean() > 0.4  # independent masks disagree on about half the elements
    gg.manual_seed(4)
    assert (F.dropout(x, 0.5).numpy() != a).mean() > 0.4


# -- backward -----------------------------------------------------------------------------------
def test_gradient_is_mask_times_scale(device):
    rng = np.random.default_rng(7)
    x, g = rng.standard_normal((2, 3, 50)), rng.standard_normal((2, 3, 50))
    gg.manual_seed(11)
    t = gg.tensor(x, device=device, requires_grad=True)
    y = F.dropout(t, 0.6)
    y.backward(gg.tensor(g, device=device))
    keep = ref_keep(x.shape, 0.6, key_after_seed(11))
    np.testing.assert_allclose(t.grad.numpy(), g * keep / 0.4, rtol=1e-15, atol=0)
    assert y._ctx.saved == [] and y._ctx.mask.dtype == np.bool_  # keeps only the bool mask


def test_gradcheck_with_fixed_seed(device):
    def fn(x):
        gg.manual_seed(21)  # every evaluation must use the same mask
        return F.dropout(x, 0.35) * x

    x = gg.tensor(np.random.default_rng(0).uniform(-2, 2, (4, 6)), device=device,
                  requires_grad=True)
    assert gg.gradcheck(fn, [x])


def test_create_graph_second_derivative(device):
    x = np.random.default_rng(3).uniform(0.5, 2.0, (5, 8))
    gg.manual_seed(8)
    t = gg.tensor(x, device=device, requires_grad=True)
    loss = (F.dropout(t, 0.5) ** 3).sum()
    (g,) = gg.grad(loss, t, create_graph=True)
    (h,) = gg.grad(g.sum(), t)
    keep = ref_keep(x.shape, 0.5, key_after_seed(8)).astype(np.float64)
    # d/dx (m s x)^3 = 3 m s^3 x^2 (m^2 = m);  d2/dx2 = 6 m s^3 x
    np.testing.assert_allclose(g.numpy(), 3 * keep * 8 * x**2, rtol=1e-12)
    np.testing.assert_allclose(h.numpy(), 6 * keep * 8 * x, rtol=1e-12)


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1.5, -0.1, float("nan")])
def test_bad_p_raises_value_error(device, p):
    x = gg.ones(2, 3, device=device)
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\].*\(2, 3\).*float32"):
        F.dropout(x, p)
    with pytest.raises(ValueError, match="Dropout: p must be in"):
        nn.Dropout(p)
    with pytest.raises(ValueError, match="MLP: p must be in"):
        nn.MLP([2, 3], dropout=p)


def test_bad_types_raise_type_error(device):
    with pytest.raises(TypeError, match=r"dropout: input must be a floating-point.*int64.*\(4,\)"):
        F.dropout(gg.tensor([1, 2, 3, 4], device=device), 0.5)
    for p in ("0.5", True, None):
        with pytest.raises(TypeError, match="dropout: p must be a float"):
            F.dropout(gg.ones(2, device=device), p)
    with pytest.raises(TypeError, match="Dropout: p must be a float"):
        nn.Dropout("0.5")


def test_scale_overflowing_the_dtype_raises(device):
    x = gg.ones(64, dtype="float16", device=device)
    with pytest.raises(ValueError, match=r"dropout: p=0.99999 is too close to 1 for float16"):
        F.dropout(x, 0.99999)
    assert np.isfinite(F.dropout(x, 0.999).numpy()).all()  # 1/(1-p) = 1000 fits in float16
    assert F.dropout(x.astype("float32"), 0.99999).numpy().max() < np.inf


def test_too_many_elements_raise_value_error():
    huge = gg.from_numpy(np.broadcast_to(np.float32(1), (2**16, 2**16)))  # 4 GiB view, no memory
    with pytest.raises(ValueError, match=r"dropout: input of shape \(65536, 65536\) has 4294967"):
        F.dropout(huge, 0.5)
    with pytest.raises(ValueError, match="uint32"):
        random_bits.keep_mask(np, (2**16, 2**16), 0.5, (1, 2))


# -- MLP ----------------------------------------------------------------------------------------
def test_mlp_dropout_keeps_keys_and_matches_manual_composition(device):
    gg.manual_seed(0)
    plain = nn.MLP([6, 8, 8, 3], device=device)
    gg.manual_seed(0)
    drop = nn.MLP([6, 8, 8, 3], dropout=0.5, device=device)
    assert list(drop.state_dict()) == list(plain.state_dict()) == [
        "0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert [type(m).__name__ for m in drop] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert "dropout=0.5" in repr(drop) and "dropout" not in repr(plain)
    plain.load_state_dict(drop.state_dict())  # a dropout-trained checkpoint serves a plain MLP

    x = gg.tensor(np.random.default_rng(0).standard_normal((5, 6)), dtype=np.float32,
                  device=device)
    gg.manual_seed(1)
    got = drop(x).numpy()
    gg.manual_seed(1)
    h = F.dropout(gg.relu(drop[0](x)), 0.5)
    h = F.dropout(gg.relu(drop[2](h)), 0.5)
    np.testing.assert_array_equal(got, drop[4](h).numpy())
    assert not np.allclose(got, plain(x).numpy())
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), plain(x).numpy())  # eval: the identity


def test_mlp_without_dropout_draws_nothing_extra(device):
    gg.manual_seed(0)
    m = nn.MLP([3, 4, 2], device=device)
    m(gg.ones(2, 3, device=device))
    after = gg.randn(2).numpy()
    gg.manual_seed(0)
    nn.MLP([3, 4, 2], device=device)
    np.testing.assert_array_equal(after, gg.randn(2).numpy())
