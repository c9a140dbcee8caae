"""Work on cuda:1 of a multi-GPU machine stays on cuda:1.

CuPy allocates and launches on the *current* GPU (device 0 unless changed), whatever GPU the
operands live on; gpugrad makes each tensor's GPU current for every op, backward node, creation,
optimizer step, loader pass and checkpoint load. Each test checks where the arrays actually are
(``t.data.device.id``), and that CuPy's current device is left as it was. Skipped unless at least
two CUDA devices are present.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.functional as F
from gpugrad import nn, optim

pytestmark = pytest.mark.skipif(gg.cuda.device_count() < 2, reason="needs two CUDA devices")

D0, D1 = "cuda:0", "cuda:1"


def on(t, index: int = 1) -> gg.Tensor:
    """Assert that ``t`` is a tensor on cuda:<index> whose array really lives there."""
    assert isinstance(t, gg.Tensor), type(t)
    assert str(t.device) == f"cuda:{index}", t.device
    assert t.data.device.id == index, (t.data.device.id, index)
    return t


def current_gpu() -> int:
    return gg.device(D0).xp.cuda.runtime.getDevice()


@pytest.fixture(autouse=True)
def current_device_is_left_alone():
    """Every test starts and must end with GPU 0 current: gpugrad's contexts are all left."""
    assert current_gpu() == 0
    yield
    assert current_gpu() == 0


def host(t) -> np.ndarray:
    return t.numpy()


# -- creation ---------------------------------------------------------------------------------
def test_creation_functions_on_cuda1():
    for t in (gg.zeros(2, 3, device=D1), gg.ones(3, device=D1), gg.empty(4, device=D1),
              gg.full((2,), 3.0, device=D1), gg.arange(5, device=D1),
              gg.linspace(0, 1, 4, device=D1), gg.randn(3, device=D1), gg.rand(3, device=D1),
              gg.randint(0, 5, size=(3,), device=D1), gg.tensor([1.0, 2.0], device=D1),
              gg.tensor(np.arange(3), device=D1), gg.zeros(2, device=D1, requires_grad=True)):
        on(t)
    x = gg.randn(2, 2, device=D1)
    for t in (gg.zeros_like(x), gg.ones_like(x), gg.full_like(x, 7.0), gg.tensor(x),
              gg.tensor(x, dtype=np.float64)):
        on(t)
    np.testing.assert_array_equal(host(gg.full_like(x, 7.0)), np.full((2, 2), 7.0, np.float32))


def test_tensor_from_cuda_tensors_on_cuda1():
    a, b = gg.tensor(1.5, device=D1), gg.tensor(2.5, device=D0)  # 0-d, on either GPU
    t = on(gg.tensor([a, b], device=D1))
    np.testing.assert_array_equal(host(t), np.array([1.5, 2.5], np.float32))
    rows = on(gg.tensor([gg.tensor([1.0, 2.0], device=D1), [3.0, 4.0]], device=D1))
    np.testing.assert_array_equal(host(rows), [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(gg.tensor([a, a]).numpy(), [1.5, 1.5])  # to the CPU


def test_full_with_a_tensor_fill_value_on_cuda1():
    for fill in (gg.tensor(3.0, device=D1), gg.tensor(3.0, device=D0), gg.tensor(3.0)):
        t = on(gg.full((2, 3), fill, device=D1))
        assert t.dtype == np.float32
        np.testing.assert_array_equal(host(t), np.full((2, 3), 3.0, np.float32))
    row = on(gg.full((2, 3), gg.tensor([1.0, 2.0, 3.0], device=D1), device=D1))  # broadcast
    np.testing.assert_array_equal(host(row), np.tile([1.0, 2.0, 3.0], (2, 1)))


# -- ops, forward and backward ----------------------------------------------------------------
def test_elementwise_reduction_and_matmul_forward_backward_on_cuda1():
    gg.manual_seed(0)
    x = gg.randn(4, 3, device=D1, requires_grad=True)
    w = gg.randn(3, 2, device=D1, requires_grad=True)
    y = gg.tanh(x @ w).sum() + (gg.exp(x) * 2 + x.sin()).mean() + gg.softmax(x, axis=1).max()
    on(y)
    y.backward()
    on(x.grad), on(w.grad)
    xh, wh = host(x).astype(np.float64), host(w).astype(np.float64)
    np.testing.assert_allclose(host(w.grad), xh.T @ (1 - np.tanh(xh @ wh) ** 2), rtol=1e-4,
                               atol=1e-5)


def test_indexing_setitem_and_non_differentiable_ops_on_cuda1():
    x = gg.tensor([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]], device=D1, requires_grad=True)
    picked = x[gg.tensor([0, 0, 1], device=D1)]  # repeated rows: a scatter-add backward
    masked = x[x > 0]
    (picked.sum() + masked.sum()).backward()
    on(picked), on(masked), on(x.grad)
    np.testing.assert_array_equal(host(x.grad), [[3.0, 2.0, 3.0], [1.0, 2.0, 1.0]])
    rows, cols = gg.tensor([False, True], device=D1), gg.tensor([2, 0], device=D1)
    np.testing.assert_array_equal(host(on(x[rows, cols])), [-6.0, -4.0])  # mask + index array
    d = x.detach()
    for t in (d > 0, d == 1.0, (d > 0) & (d < 4), ~(d > 0), d.argmax(axis=1), gg.argmin(d),
              gg.isfinite(d), d.astype("int64"), gg.where(d > 0, d, 0.0), gg.maximum(d, 0.0),
              gg.concatenate([d, d]), gg.stack([d, d])):
        on(t)
    t = gg.zeros(2, 3, device=D1)
    t[0] = gg.tensor([1.0, 2.0, 3.0], device=D1)
    t[1, [0, 2]] = 5.0
    t[:, 1] = [7.0, 8.0]
    on(t)
    np.testing.assert_array_equal(host(t), [[1.0, 7.0, 3.0], [5.0, 8.0, 5.0]])


def test_grad_seeds_and_double_backward_on_cuda1():
    x = gg.tensor([1.0, 2.0, 3.0], device=D1, requires_grad=True)
    y = x * x * x
    (g,) = gg.grad(y, [x], grad_outputs=gg.ones(3, device=D1), create_graph=True)
    on(g)
    np.testing.assert_allclose(host(g), 3 * np.array([1.0, 4.0, 9.0]))
    (gg2,) = gg.grad(g.sum(), [x])
    np.testing.assert_allclose(host(on(gg2)), 6 * np.array([1.0, 2.0, 3.0]))
    y2 = x * 2.0
    y2.backward(np.ones(3))  # a host seed goes to the output's GPU
    np.testing.assert_allclose(host(on(x.grad)), [2.0, 2.0, 2.0])


def test_losses_on_cuda1():
    gg.manual_seed(1)
    z = gg.randn(6, 4, device=D1, requires_grad=True)
    labels = gg.tensor([0, 1, 2, 3, 0, 1], device=D1)
    t = gg.rand(6, 4, device=D1)
    loss = (F.cross_entropy(z, labels) + F.nll_loss(gg.log_softmax(z), labels)
            + F.cross_entropy(z, labels.astype("int32"), reduction="sum")
            + F.binary_cross_entropy_with_logits(z, t) + F.mse_loss(z, t)
            + F.binary_cross_entropy(gg.sigmoid(z), t) + gg.gelu(z).sum())
    on(loss)
    loss.backward()
    on(z.grad)
    assert np.isfinite(host(z.grad)).all()


def test_gradcheck_on_cuda1():
    x = gg.randn(3, 2, dtype=np.float64, device=D1, requires_grad=True)
    assert gg.gradcheck(lambda a: (a * a).sum(axis=0) + gg.tanh(a).mean(), [x])


# -- moving between devices -------------------------------------------------------------------
@pytest.mark.parametrize("leaf", [True, False], ids=["leaf", "node"])
def test_to_between_gpus_is_differentiable(leaf):
    x0 = gg.tensor([1.0, 2.0, 3.0], device=D0, requires_grad=True)
    x = x0 if leaf else x0 * 1.0
    y = on(x.to(D1))
    z = on(y * y + 1)
    # x is also used on its own GPU: both gradients meet (are added) on cuda:0
    loss = z.sum().to(D0) + (x * 10).sum()
    loss.backward(retain_graph=True)
    on(x0.grad, 0)
    np.testing.assert_allclose(host(x0.grad), 2 * np.array([1.0, 2.0, 3.0]) + 10)
    back = on(y.to(D0), 0)
    (g,) = gg.grad(back.sum(), [y])
    on(g)


def test_cpu_to_cuda1_and_back_is_differentiable():
    x = gg.tensor([1.0, -1.0], requires_grad=True)
    y = on(x.to(D1, np.float64))
    out = (y * 3).cpu().sum()
    out.backward()
    assert str(x.grad.device) == "cpu" and x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


# -- nn, optimizers, data, checkpoints -------------------------------------------------------
def _mlp(device):
    gg.manual_seed(0)
    return nn.MLP([8, 16, 3], activation="relu", device=device)


@pytest.mark.parametrize("make_opt", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda ps: optim.Adam(ps, lr=1e-2, weight_decay=1e-3),
    lambda ps: optim.AdamW(ps, lr=1e-2),
], ids=["sgd", "adam", "adamw"])
def test_mlp_training_steps_on_cuda1(make_opt):
    model = _mlp(D1)
    for p in model.parameters():
        on(p)
    opt = make_opt(list(model.parameters()))
    x = gg.randn(10, 8, device=D1)
    y = gg.tensor(np.arange(10) % 3, device=D1)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for p in model.parameters():
        on(p), on(p.grad)
        for v in opt.state[p].values():
            if isinstance(v, gg.Tensor):
                on(v)
    opt.zero_grad(set_to_none=False)
    model.zero_grad(set_to_none=False)
    for p in model.parameters():
        assert not host(on(p.grad)).any()


def test_training_matches_cpu_on_cuda1():
    """The same seeded steps on cuda:1 and on the CPU give the same weights."""
    finals = []
    for device in ("cpu", D1):
        model = _mlp(device)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = gg.tensor(np.linspace(-1, 1, 80).reshape(10, 8), device=device)
        y = gg.tensor(np.arange(10) % 3, device=device)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        finals.append([p.numpy() for p in model.parameters()])
    for a, b in zip(*finals):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_one_optimizer_over_two_gpus():
    p0 = gg.ones(3, device=D0, requires_grad=True)
    p1 = gg.ones(3, device=D1, requires_grad=True)
    for opt in (optim.SGD([p0, p1], lr=0.5, momentum=0.9), optim.Adam([p0, p1], lr=0.5)):
        for _ in range(2):
            opt.zero_grad()
            ((p0 * p0).sum() + (p1 * p1).sum().to(D0)).backward()
            opt.step()
        on(p0, 0), on(p1, 1)
        np.testing.assert_allclose(host(p0), host(p1))
        for p, i in ((p0, 0), (p1, 1)):
            for v in opt.state[p].values():
                if isinstance(v, gg.Tensor):
                    on(v, i)


def test_module_to_between_gpus():
    model = _mlp(D0)
    ref = [p.numpy() for p in model.parameters()]
    model.to(D1, np.float64)
    for p, r in zip(model.parameters(), ref):
        on(p)
        assert p.dtype == np.float64
        np.testing.assert_array_equal(host(p), r)
    on(model(gg.randn(2, 8, dtype=np.float64, device=D1)))


def test_dataloader_on_cuda1():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    seen = []
    for shuffle in (True, False):
        loader = gg.data.DataLoader(x, y, batch_size=4, shuffle=shuffle, device=D1)
        assert str(loader.device) == D1
        for xb, yb in loader:
            on(xb), on(yb)
            seen.append(host(yb))
    np.testing.assert_array_equal(np.sort(np.concatenate(seen[:3])), y)
    moved = gg.data.DataLoader(gg.tensor(x, device=D0), gg.tensor(y, device=D0), batch_size=5,
                               device=D1)
    for xb, yb in moved:
        on(xb), on(yb)


def test_checkpoint_load_to_cuda1(tmp_path):
    model = _mlp(D0)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    x, y = gg.randn(5, 8, device=D0), gg.tensor([0, 1, 2, 0, 1], device=D0)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    path = tmp_path / "ckpt.safetensors"
    gg.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 1}, path)

    ckpt = gg.load(path, device=D1)
    for t in ckpt["model"].values():
        on(t)
    for entry in ckpt["optimizer"]["state"].values():
        on(entry["exp_avg"]), on(entry["exp_avg_sq"])

    other = _mlp(D1)
    other.load_state_dict(ckpt["model"])
    opt1 = optim.Adam(other.parameters(), lr=1e-2)
    opt1.load_state_dict(gg.load(path)["optimizer"])  # CPU state onto cuda:1 parameters
    for p, q in zip(other.parameters(), model.parameters()):
        on(p)
        np.testing.assert_array_equal(host(p), host(q))
        for v in opt1.state[p].values():
            if isinstance(v, gg.Tensor):
                on(v)
    x1, y1 = x.to(D1), y.to(D1)
    opt1.zero_grad()
    F.cross_entropy(other(x1), y1).backward()
    opt1.step()
    for p in other.parameters():
        on(p)
    other.load_state_dict(model.state_dict())  # from cuda:0 tensors, in place
    for p, q in zip(other.parameters(), model.parameters()):
        np.testing.assert_array_equal(host(on(p)), host(q))


def test_explain_and_parity_on_cuda1():
    x = gg.tensor(1.0, device=D1)
    w = gg.tensor(0.0, device=D1, requires_grad=True)
    h = 1 / (1 + gg.exp(-(w * x)))
    table = str(gg.explain(h))
    assert "0.25" in table, table
    result = gg.parity.parity(steps=3, devices=("cpu", D1))
    assert result.ok(1e-4), str(result)
