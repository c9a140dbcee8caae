"""LayerNorm and BatchNorm1d: float64 NumPy references, gradcheck (first and second order),
torch.nn with copied weights (values, gradients, running statistics, state_dict keys), train/eval
behaviour, checkpoints across devices, and errors. Float16 inputs: test_nn_normalization_float16.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from _nn_helpers import (
    _other,
    _rng,
    _set,
    _t,
    _to_torch,
    needs_torch,
    ref_batch_norm,
    ref_batch_stats,
    ref_layer_norm,
    torch,
)

import gpugrad as gg
import gpugrad.nn as nn
from gpugrad.nn.normalization import batch_norm, layer_norm


# -- LayerNorm ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,normalized", [((4, 6), 6), ((2, 3, 5), (3, 5)), ((7,), (7,))])
def test_layer_norm_forward_matches_float64_reference(device, shape, normalized):
    k = 1 if isinstance(normalized, int) else len(normalized)
    ln = nn.LayerNorm(normalized, eps=1e-3, device=device)
    assert ln.weight.shape == shape[len(shape) - k:] and ln.weight.dtype == np.float32
    np.testing.assert_array_equal(ln.weight.numpy(), 1)
    np.testing.assert_array_equal(ln.bias.numpy(), 0)
    w, b = _rng(1).normal(size=ln.weight.shape), _rng(2).normal(size=ln.bias.shape)
    _set(ln.weight, w)
    _set(ln.bias, b)
    x = _rng(3).normal(2.0, 3.0, size=shape)
    y = ln(_t(x.astype(np.float32), device))
    assert y.dtype == np.float32 and y.shape == shape
    ref = ref_layer_norm(x, k, w.astype(np.float32), b.astype(np.float32), eps=1e-3)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-5)
    y64 = nn.LayerNorm(normalized, elementwise_affine=False, device=device)(_t(x, device))
    assert y64.dtype == np.float64  # float64 input, float32 parameters: NumPy's promotion
    np.testing.assert_allclose(y64.numpy(), ref_layer_norm(x, k), rtol=1e-9, atol=1e-9)


def test_layer_norm_gradcheck_first_and_second_order(device):
    x = _t(_rng(0).normal(size=(3, 4)), device, requires_grad=True)
    w = _t(_rng(1).normal(size=4), device, requires_grad=True)
    b = _t(_rng(2).normal(size=4), device, requires_grad=True)
    assert gg.gradcheck(lambda x, w, b: layer_norm(x, 4, w, b), [x, w, b])
    x3 = _t(_rng(3).normal(size=(2, 2, 3)), device, requires_grad=True)
    assert gg.gradcheck(lambda x: layer_norm(x, (2, 3), eps=0.1), [x3])

    def grad_of(x, w):  # the gradient itself, recorded with create_graph=True
        y = layer_norm(x, 4, w, None)
        return gg.grad((y * y * y).sum(), [x], create_graph=True)[0]

    assert gg.gradcheck(grad_of, [x, w], atol=1e-4)


@needs_torch
@pytest.mark.parametrize("affine,bias", [(True, True), (True, False), (False, False)])
def test_layer_norm_matches_torch(device, affine, bias):
    gg.manual_seed(0)
    ln = nn.LayerNorm((3, 4), elementwise_affine=affine, bias=bias, device=device)
    tln = torch.nn.LayerNorm((3, 4), elementwise_affine=affine, bias=bias)
    assert list(ln.state_dict()) == list(tln.state_dict())
    if affine:
        _set(ln.weight, _rng(1).normal(size=(3, 4)))
        if bias:
            _set(ln.bias, _rng(2).normal(size=(3, 4)))
    _to_torch(ln, tln)
    x = _rng(3).normal(1.0, 2.0, size=(5, 3, 4)).astype(np.float32)
    g = _rng(4).normal(size=x.shape).astype(np.float32)
    xg, xt = _t(x, device, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, yt = ln(xg), tln(xt)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    (y * _t(g, device)).sum().backward()
    (yt * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(xg.grad.numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    for name, p in ln.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), getattr(tln, name).grad.numpy(), rtol=1e-4,
                                   atol=1e-5, err_msg=name)


def test_layer_norm_errors(device):
    ln = nn.LayerNorm(5, device=device)
    with pytest.raises(ValueError, match=r"LayerNorm.*\(5,\).*\(3, 4\)"):
        ln(gg.ones(3, 4, device=device))
    with pytest.raises(ValueError, match=r"LayerNorm.*\(2, 5\).*\(5,\)"):
        nn.LayerNorm((2, 5), device=device)(gg.ones(5, device=device))
    with pytest.raises(TypeError, match="LayerNorm.*floating-point.*int64"):
        ln(gg.tensor([[1, 2, 3, 4, 5]], device=device))
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.LayerNorm(-1)  # (0 is allowed, as in PyTorch: tests/test_ops_zero_size.py)
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.LayerNorm(())
    with pytest.raises(ValueError, match=r"layer_norm: weight must have shape \(5,\)"):
        layer_norm(gg.ones(2, 5, device=device), 5, gg.ones(4, device=device))


# -- BatchNorm1d ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5)])
def test_batch_norm_train_and_eval_match_float64_reference(device, shape):
    bn = nn.BatchNorm1d(3, momentum=0.2, device=device, dtype=np.float64)
    w, b = _rng(1).normal(size=3), _rng(2).normal(size=3)
    _set(bn.weight, w)
    _set(bn.bias, b)
    rm, rv = np.zeros(3), np.ones(3)
    for step in range(3):
        x = _rng(10 + step).normal(step, 1 + step, size=shape)
        y = bn(_t(x, device))
        mu, var, unbiased = ref_batch_stats(x)
        np.testing.assert_allclose(y.numpy(), ref_batch_norm(x, mu, var, w, b), rtol=1e-10,
                                   atol=1e-10)
        rm, rv = 0.8 * rm + 0.2 * mu, 0.8 * rv + 0.2 * unbiased
        np.testing.assert_allclose(bn.running_mean.numpy(), rm, rtol=1e-12)
        np.testing.assert_allclose(bn.running_var.numpy(), rv, rtol=1e-12)
        assert bn.num_batches_tracked.item() == step + 1
    bn.eval()
    x = _rng(20).normal(size=shape)
    y = bn(_t(x, device))
    np.testing.assert_allclose(y.numpy(), ref_batch_norm(x, rm, rv, w, b), rtol=1e-10, atol=1e-10)
    # eval normalises each sample on its own: a one-sample batch gives the same row
    np.testing.assert_allclose(bn(_t(x[:1], device)).numpy(), y.numpy()[:1], rtol=1e-12)
    np.testing.assert_allclose(bn.running_mean.numpy(), rm, rtol=1e-12)  # eval leaves them
    assert bn.num_batches_tracked.item() == 3


def test_batch_norm_momentum_none_is_the_cumulative_average(device):
    bn = nn.BatchNorm1d(2, momentum=None, device=device, dtype=np.float64)
    batches = [_rng(s).normal(s, 1.0 + s, size=(5, 2)) for s in range(4)]
    for x in batches:
        bn(_t(x, device))
    means = [x.mean(axis=0) for x in batches]
    unbiased = [x.var(axis=0, ddof=1) for x in batches]
    np.testing.assert_allclose(bn.running_mean.numpy(), np.mean(means, axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), np.mean(unbiased, axis=0), rtol=1e-12)


def test_batch_norm_running_stats_are_in_place_and_off_the_tape(device):
    bn = nn.BatchNorm1d(3, device=device)
    before = {k: v for k, v in bn.state_dict().items()}
    ids = [id(b) for b in bn.buffers()]
    x = _t(_rng(0).normal(size=(4, 3)).astype(np.float32), device, requires_grad=True)
    y = bn(x)
    assert [id(b) for b in bn.buffers()] == ids  # the same buffer tensors, updated
    for b in bn.buffers():
        assert b.is_leaf and not b.requires_grad and str(b.device) == str(gg.device(device))
    # the state_dict taken before is a snapshot: its arrays are never written into (the
    # project's rule, which the optimizers keep for parameters too; torch would share them)
    np.testing.assert_array_equal(before["running_mean"].numpy(), 0)
    np.testing.assert_array_equal(before["running_var"].numpy(), 1)
    assert before["num_batches_tracked"].item() == 0
    assert bn.num_batches_tracked.item() == 1
    assert not np.allclose(bn.running_mean.numpy(), 0)
    y.sum().backward()  # nothing about the statistics was recorded: backward is just the op's
    assert x.grad is not None and bn.running_mean.grad is None
    with gg.no_grad():
        out = bn(x)
    assert out._ctx is None and bn.num_batches_tracked.item() == 2  # no_grad still updates


def test_state_dict_snapshot_survives_a_training_step(device):
    """``best = model.state_dict()`` (detached tensors sharing the arrays) must not follow the
    model: parameters are stepped through ``writable_data`` by the optimizer, and the buffers,
    updated by the forward pass, likewise -- also by ``reset_running_stats``."""
    gg.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 3, device=device), nn.BatchNorm1d(3, device=device))
    opt = gg.optim.SGD(m.parameters(), lr=0.1)
    m(_t(_rng(0).normal(size=(8, 4)).astype(np.float32), device))  # buffers off their init
    best = m.state_dict()
    saved = {k: v.numpy().copy() for k, v in best.items()}
    loss = (m(_t(_rng(1).normal(size=(8, 4)).astype(np.float32), device)) ** 2).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    for k, v in best.items():
        np.testing.assert_array_equal(v.numpy(), saved[k], err_msg=k)
    now = m.state_dict()
    for k in ("0.weight", "1.running_mean", "1.running_var"):
        assert not np.array_equal(now[k].numpy(), saved[k]), k
    assert saved["1.num_batches_tracked"] == 1 and now["1.num_batches_tracked"].item() == 2
    m[1].reset_running_stats()
    for k, v in best.items():
        np.testing.assert_array_equal(v.numpy(), saved[k], err_msg=k)
    np.testing.assert_array_equal(m[1].running_mean.numpy(), 0)
    np.testing.assert_array_equal(m[1].running_var.numpy(), 1)
    assert m[1].num_batches_tracked.item() == 0
    m.load_state_dict(best)  # restoring the snapshot restores the statistics
    np.testing.assert_array_equal(m[1].running_mean.numpy(), saved["1.running_mean"])
    assert m[1].num_batches_tracked.item() == 1


def test_functional_batch_norm_never_writes_into_a_shared_running_array(device):
    rm, rv = gg.zeros(3, device=device), gg.ones(3, device=device)
    alias_m, alias_v = rm.detach(), rv.detach()  # sharing the arrays, as a state_dict does
    batch_norm(_t(_rng(0).normal(size=(5, 3)), device, dtype=np.float32), rm, rv,
               training=True)
    np.testing.assert_array_equal(alias_m.numpy(), 0)
    np.testing.assert_array_equal(alias_v.numpy(), 1)
    assert not np.allclose(rm.numpy(), 0) and not np.allclose(rv.numpy(), 1)


def test_update_running_takes_one_path_for_scalars_and_0d_arrays():
    """NumPy turns ``1 / num_batches_tracked`` into a scalar (np.float64), CuPy keeps a 0-d
    array: both, and a Python float, must round alike (the factor is made a 0-d array of the
    buffer's dtype first), so CPU and GPU running statistics agree bit for bit."""
    from gpugrad.ops.normalization import _update_running
    rng = _rng(0)
    for k in range(2, 60):
        start = rng.normal(size=200).astype(np.float32)
        batch = rng.normal(size=200).astype(np.float32)
        f = 1.0 / np.array(k).astype(np.float64)
        assert isinstance(f, np.float64)  # the scalar NumPy hands back
        outs = []
        for factor in (f, np.asarray(f), float(f), np.asarray(f, dtype=np.float32)):
            r = gg.tensor(start.copy())
            _update_running(r, batch, factor)
            outs.append(r.numpy())
        for o in outs[1:]:
            np.testing.assert_array_equal(o, outs[0])
        f32 = np.float32(f)  # what the one path computes: float32 throughout
        np.testing.assert_array_equal(outs[0], start * (np.float32(1) - f32) + f32 * batch)


def test_batch_norm_momentum_none_float32_matches_float64_reference(device):
    bn = nn.BatchNorm1d(4, momentum=None, device=device)
    bn64 = nn.BatchNorm1d(4, momentum=None, device=device, dtype=np.float64)
    means, unbiased = [], []
    for s in range(12):
        x = _rng(s).normal(s % 3, 1.0 + s, size=(6, 4))
        bn(_t(x.astype(np.float32), device))
        bn64(_t(x.astype(np.float32).astype(np.float64), device))
        means.append(x.astype(np.float32).astype(np.float64).mean(axis=0))
        unbiased.append(x.astype(np.float32).astype(np.float64).var(axis=0, ddof=1))
    assert bn.running_mean.dtype == np.float32 and bn.num_batches_tracked.item() == 12
    np.testing.assert_allclose(bn64.running_mean.numpy(), np.mean(means, axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_mean.numpy(), np.mean(means, axis=0), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), np.mean(unbiased, axis=0), rtol=1e-5)


def _fake_device():
    """A second Device object (a NumPy backend under another name), so the device checks can
    be exercised without a GPU."""
    from gpugrad.backend.device import Device
    from gpugrad.backend.numpy_backend import NumpyBackend
    return Device("cuda", 7, NumpyBackend())


@pytest.mark.parametrize("name", ["num_batches_tracked", "running_mean", "running_var",
                                  "weight"])
def test_batch_norm_buffer_on_another_device_changes_nothing(device, name):
    bn = nn.BatchNorm1d(3, momentum=None, device=device)
    other = gg.device(_other(device))
    if other is gg.device(device):
        other = _fake_device()
    t = getattr(bn, name)
    t.device = other  # as if moved by hand: the arrays stay readable on the host here
    with pytest.raises(gg.DeviceError, match=name):
        bn(_t(_rng(0).normal(size=(4, 3)).astype(np.float32), device))
    t.device = gg.device(device)
    assert bn.num_batches_tracked.item() == 0  # the failed call moved nothing
    np.testing.assert_array_equal(bn.running_mean.numpy(), 0)
    np.testing.assert_array_equal(bn.running_var.numpy(), 1)


def test_batch_norm_gradcheck_train_eval_and_second_order(device):
    x = _t(_rng(0).normal(size=(4, 3)), device, requires_grad=True)
    x3 = _t(_rng(1).normal(size=(3, 2, 2)), device, requires_grad=True)
    w = _t(_rng(2).normal(size=3), device, requires_grad=True)
    b = _t(_rng(3).normal(size=3), device, requires_grad=True)
    assert gg.gradcheck(lambda x, w, b: batch_norm(x, None, None, w, b, training=True), [x, w, b])
    assert gg.gradcheck(lambda x: batch_norm(x, None, None, training=True, eps=0.1), [x3])
    rm, rv = _t(np.array([0.5, -1.0, 2.0]), device), _t(np.array([2.0, 0.5, 1.5]), device)
    assert gg.gradcheck(lambda x, w, b: batch_norm(x, rm, rv, w, b, training=False), [x, w, b])

    def grad_of(x, w):
        y = batch_norm(x, None, None, w, None, training=True)
        return gg.grad((y * y * y).sum(), [x], create_graph=True)[0]

    assert gg.gradcheck(grad_of, [x, w], atol=1e-4)


@needs_torch
@pytest.mark.parametrize("shape", [(8, 4), (5, 4, 3)])
@pytest.mark.parametrize("momentum", [0.1, None, 0.5])
def test_batch_norm_matches_torch_over_train_steps(device, shape, momentum):
    gg.manual_seed(0)
    bn = nn.BatchNorm1d(4, momentum=momentum, device=device)
    tbn = torch.nn.BatchNorm1d(4, momentum=momentum)
    assert [(k, tuple(v.shape)) for k, v in bn.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in tbn.state_dict().items()]
    assert bn.state_dict()["num_batches_tracked"].dtype == np.int64
    _set(bn.weight, _rng(1).normal(size=4))
    _set(bn.bias, _rng(2).normal(size=4))
    _to_torch(bn, tbn)
    for step in range(4):
        x = (_rng(10 + step).normal(size=shape) * (1 + step) + step).astype(np.float32)
        g = _rng(30 + step).normal(size=shape).astype(np.float32)
        xg, xt = _t(x, device, requires_grad=True), torch.tensor(x, requires_grad=True)
        bn.zero_grad()
        tbn.zero_grad()
        y, yt = bn(xg), tbn(xt)
        np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-5)
        (y * _t(g, device)).sum().backward()
        (yt * torch.from_numpy(g)).sum().backward()
        np.testing.assert_allclose(xg.grad.numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
        for name in ("weight", "bias"):
            np.testing.assert_allclose(getattr(bn, name).grad.numpy(),
                                       getattr(tbn, name).grad.numpy(), rtol=1e-4, atol=1e-4)
        for k, v in tbn.state_dict().items():
            np.testing.assert_allclose(bn.state_dict()[k].numpy(), v.numpy(), rtol=1e-5,
                                       atol=1e-6, err_msg=f"{k} after step {step}")
    bn.eval()
    tbn.eval()
    x = _rng(50).normal(size=shape).astype(np.float32)
    np.testing.assert_allclose(bn(_t(x, device)).numpy(), tbn(torch.tensor(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-5)


@needs_torch
@pytest.mark.parametrize("affine,track", [(False, True), (True, False), (False, False)])
def test_batch_norm_options_match_torch(device, affine, track):
    bn = nn.BatchNorm1d(3, affine=affine, track_running_stats=track, device=device)
    tbn = torch.nn.BatchNorm1d(3, affine=affine, track_running_stats=track)
    assert list(bn.state_dict()) == list(tbn.state_dict())
    assert (bn.running_mean is None) == (not track) and (bn.weight is None) == (not affine)
    for mode in ("train", "eval"):
        getattr(bn, mode)()
        getattr(tbn, mode)()
        for step in range(2):
            x = (_rng(step).normal(size=(6, 3)) * 2 + 1).astype(np.float32)
            np.testing.assert_allclose(bn(_t(x, device)).numpy(),
                                       tbn(torch.tensor(x)).detach().numpy(), rtol=1e-5,
                                       atol=1e-5, err_msg=f"{mode} step {step}")
        for k, v in tbn.state_dict().items():
            np.testing.assert_allclose(bn.state_dict()[k].numpy(), v.numpy(), rtol=1e-5,
                                       atol=1e-6)


def test_batch_norm_errors_name_layer_and_shapes(device):
    bn = nn.BatchNorm1d(4, device=device)
    with pytest.raises(ValueError, match=r"BatchNorm1d\(4\).*\(N, 4\).*\(8, 3\)"):
        bn(gg.ones(8, 3, device=device))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(4\).*\(N, 4, L\).*\(2, 4, 3, 3\)"):
        bn(gg.ones(2, 4, 3, 3, device=device))
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 4\)"):
        bn(gg.ones(1, 4, device=device))
    assert bn.num_batches_tracked.item() == 0  # the failed call changed nothing
    np.testing.assert_array_equal(bn.running_var.numpy(), 1)
    bn.eval()
    assert bn(gg.ones(1, 4, device=device)).shape == (1, 4)  # fine with running statistics
    with pytest.raises(TypeError, match="BatchNorm1d.*floating-point"):
        bn(gg.tensor([[1, 2, 3, 4]], device=device))
    with pytest.raises(ValueError, match="num_features"):
        nn.BatchNorm1d(0)
    with pytest.raises(TypeError, match="momentum"):
        nn.BatchNorm1d(3, momentum="0.1")
    with pytest.raises(ValueError, match="running_mean and running_var are needed"):
        batch_norm(gg.ones(2, 3, device=device), None, None, training=False)


def test_batch_norm_to_moves_buffers_and_casts_floats_only(device):
    bn = nn.BatchNorm1d(3)
    bn(_t(_rng(0).normal(size=(4, 3)).astype(np.float32), "cpu"))
    rm = bn.running_mean.numpy()
    bn.to(device)
    for name, b in bn.named_buffers():
        assert str(b.device) == str(gg.device(device)), name
    np.testing.assert_array_equal(bn.running_mean.numpy(), rm)
    bn(_t(_rng(1).normal(size=(4, 3)).astype(np.float32), device))  # updates on the device
    assert bn.num_batches_tracked.item() == 2
    bn.to(dtype=np.float64)
    assert bn.running_var.dtype == np.float64 and bn.weight.dtype == np.float64
    assert bn.num_batches_tracked.dtype == np.int64


# -- checkpoints and training ---------------------------------------------------------------------
def _net(device):
    return nn.Sequential(nn.Linear(5, 8, device=device), nn.BatchNorm1d(8, device=device),
                         nn.ReLU(), nn.Linear(8, 4, device=device),
                         nn.LayerNorm(4, device=device))


def test_state_dict_round_trip_through_save_and_load_on_another_device(device, tmp_path):
    gg.manual_seed(0)
    net = _net(device)
    opt = gg.optim.SGD(net.parameters(), lr=0.1)
    for step in range(3):
        x = _t(_rng(step).normal(size=(6, 5)).astype(np.float32), device)
        loss = (net(x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    gg.save({"model": net.state_dict()}, tmp_path / "ckpt.safetensors")
    other = _other(device)
    sd = gg.load(tmp_path / "ckpt.safetensors", device=other)["model"]
    nbt = sd["1.num_batches_tracked"]  # a 0-d int64 tensor stays 0-d int64 through the file
    assert nbt.shape == () and nbt.dtype == np.int64 and nbt.item() == 3
    gg.manual_seed(1)
    fresh = _net(other)
    result = fresh.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[k].numpy(), v.numpy(), err_msg=k)
    net.eval()
    fresh.eval()
    x = _rng(9).normal(size=(3, 5)).astype(np.float32)
    np.testing.assert_allclose(fresh(_t(x, other)).numpy(), net(_t(x, device)).numpy(),
                               rtol=1e-5, atol=1e-6)


@needs_torch
def test_training_with_batch_norm_and_layer_norm_matches_torch(device):
    gg.manual_seed(0)
    net = _net(device)
    tnet = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                               torch.nn.Linear(8, 4), torch.nn.LayerNorm(4))
    assert sorted(net.state_dict()) == sorted(tnet.state_dict())
    _to_torch(net, tnet)
    opt = gg.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(tnet.parameters(), lr=0.1, momentum=0.9)
    labels = _rng(1).integers(0, 4, size=16)
    x = _rng(2).normal(size=(16, 5)).astype(np.float32)
    for step in range(5):
        loss = gg.functional.cross_entropy(net(_t(x, device)), _t(labels, device))
        tloss = torch.nn.functional.cross_entropy(tnet(torch.tensor(x)), torch.tensor(labels))
        np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-5, err_msg=f"step {step}")
        opt.zero_grad()
        topt.zero_grad()
        loss.backward()
        tloss.backward()
        opt.step()
        topt.step()
    for k, v in tnet.state_dict().items():
        np.testing.assert_allclose(net.state_dict()[k].numpy(), v.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=k)


def test_functional_forms_are_exported():
    import gpugrad.functional as F
    from gpugrad.nn.embedding import embedding

    assert F.layer_norm is layer_norm and F.batch_norm is batch_norm and F.embedding is embedding
    x = gg.tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_allclose(F.layer_norm(x, (3,)).numpy(), ref_layer_norm(x.numpy(), 1),
                               rtol=1e-12)
