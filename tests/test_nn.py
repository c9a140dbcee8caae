"""gpugrad.nn: registration, state_dict round trips and errors, seeded init, devices, layers."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.nn as nn
from gpugrad.nn import init


class Net(nn.Module):
    def __init__(self, device=None):
        super().__init__()
        self.body = nn.MLP([4, 6, 3], device=device)
        self.scale = gg.tensor(1.5, device=device, requires_grad=True)
        self.register_buffer("steps", gg.zeros(2, device=device))
        self.note = "not state"
        self.constant = gg.ones(3, device=device)  # no grad: neither parameter nor buffer

    def forward(self, x):
        return self.body(x) * self.scale


def test_parameter_registration_order_and_names(device):
    gg.manual_seed(0)
    net = Net(device)
    names = [n for n, _ in net.named_parameters()]
    assert names == ["scale", "body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias"]
    assert [n for n, _ in net.named_buffers()] == ["steps"]
    assert list(net.state_dict()) == names + ["steps"]
    assert net.num_parameters() == 1 + 4 * 6 + 6 + 6 * 3 + 3
    assert [type(m).__name__ for m in net.modules()] == ["Net", "MLP", "Linear", "ReLU",
                                                         "Linear"]
    assert [n for n, _ in net.named_children()] == ["body"]
    # reassigning an attribute to something else unregisters it
    net.scale = 2.0
    assert "scale" not in dict(net.named_parameters())
    del net.body
    assert list(net.parameters()) == []


def test_parameter_factory_and_frozen_parameters(device):
    w = nn.Parameter(gg.zeros(2, 3, device=device))
    assert w.requires_grad and w.is_leaf and type(w) is gg.Tensor
    shared = gg.ones(2, device=device)
    p = nn.Parameter(shared)
    p.data[0] = 5  # shares the data, like torch.nn.Parameter
    assert shared.numpy()[0] == 5
    m = nn.Module()
    m.register_parameter("frozen", gg.ones(2, device=device))
    assert [n for n, _ in m.named_parameters()] == ["frozen"]
    with pytest.raises(TypeError, match="floating-point"):
        nn.Parameter(gg.tensor([1, 2]))
    with pytest.raises(AttributeError, match="super"):
        class Broken(nn.Module):
            def __init__(self):
                self.w = nn.Parameter(gg.zeros(1))

        Broken()


def test_tied_parameter_listed_once():
    a = nn.Linear(3, 3)
    seq = nn.Sequential(a, nn.ReLU(), a)
    assert len(list(seq.parameters())) == 2


def test_linear_default_init_matches_torch_bounds_and_is_seeded(device):
    gg.manual_seed(7)
    layer = nn.Linear(50, 20, device=device)
    w, b = layer.weight.numpy(), layer.bias.numpy()
    bound = 1 / math.sqrt(50)
    assert w.shape == (20, 50) and b.shape == (20,) and w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.9 * bound  # actually uses the whole range
    # exactly the host generator's draws: weight first, then bias
    rng = np.random.default_rng(7)
    np.testing.assert_array_equal(w, rng.uniform(-bound, bound, (20, 50)).astype(np.float32))
    np.testing.assert_array_equal(b, rng.uniform(-bound, bound, 20).astype(np.float32))
    assert nn.Linear(3, 2, bias=False).bias is None


def test_same_seed_bit_identical_weights_across_devices(device):
    gg.manual_seed(123)
    a = nn.MLP([8, 16, 4], device="cpu").state_dict()
    gg.manual_seed(123)
    b = nn.MLP([8, 16, 4], device=device).state_dict()
    gg.manual_seed(124)
    c = nn.MLP([8, 16, 4], device=device).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
        assert str(b[k].device) == str(gg.device(device))
    assert not np.array_equal(a["0.weight"].numpy(), c["0.weight"].numpy())


def test_state_dict_round_trip(device):
    gg.manual_seed(1)
    src = Net(device)
    src.steps.data[...] = 3
    gg.manual_seed(2)
    dst = Net("cpu")
    result = dst.load_state_dict(src.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
    # values are copied into the existing tensors: identities kept, no aliasing
    before = dst.body[0].weight
    dst.load_state_dict({k: v.numpy() for k, v in src.state_dict().items()})
    assert dst.body[0].weight is before
    src.body[0].weight.data[...] = 0
    assert np.any(dst.body[0].weight.numpy() != 0)


def test_load_state_dict_errors_name_keys_and_shapes():
    net = nn.MLP([4, 6, 3])
    sd = net.state_dict()
    bad = dict(sd)
    bad["2.weight"] = gg.zeros(3, 7)
    with pytest.raises(ValueError, match=r"'2.weight'.*\(3, 7\).*\(3, 6\)"):
        net.load_state_dict(bad)
    with pytest.raises(ValueError, match=r"shape"):  # shape errors even when not strict
        net.load_state_dict(bad, strict=False)
    missing = {k: v for k, v in sd.items() if k != "0.bias"}
    with pytest.raises(ValueError, match=r"missing keys \['0.bias'\]"):
        net.load_state_dict(missing)
    extra = dict(sd, **{"3.weight": gg.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected keys \['3.weight'\]"):
        net.load_state_dict(extra)
    r = net.load_state_dict(dict(missing, **{"3.weight": gg.zeros(1)}), strict=False)
    assert r.missing_keys == ["0.bias"] and r.unexpected_keys == ["3.weight"]
    with pytest.raises(ValueError, match="expected a tensor"):
        net.load_state_dict(dict(sd, **{"0.bias": "nope"}))
    with pytest.raises(TypeError, match="mapping"):
        net.load_state_dict([1, 2])
    # nothing changed by the failed loads
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), sd[k].numpy())


def test_to_moves_in_place_and_keeps_identity(device):
    net = nn.MLP([3, 4, 2])
    params = list(net.parameters())
    x = gg.ones(2, 3)
    net(x).sum().backward()
    assert net.to(device) is net
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]
    for p in net.parameters():
        assert str(p.device) == str(gg.device(device)) and p.requires_grad
        assert str(p.grad.device) == str(gg.device(device))
    out = net(x.to(device))
    assert out.shape == (2, 2)
    net.to(dtype=np.float64)
    assert all(p.dtype == np.float64 for p in net.parameters())
    for cast, dtype in ((net.half, np.float16), (net.float, np.float32), (net.double, np.float64)):
        assert cast() is net and all(p.dtype == dtype for p in net.parameters())
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]
    net.to("cpu")
    assert all(str(p.device) == "cpu" for p in net.parameters())


def test_train_eval_zero_grad_and_call(device):
    net = Net(device)
    assert net.training and net.body[0].training
    assert net.eval() is net and not net.body[1].training
    net.train()
    assert net.body[2].training
    net(gg.ones(2, 4, device=device)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(np.all(p.grad.numpy() == 0) for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_layers_forward(device):
    x = gg.tensor([[-1.0, 0.5, 2.0]], device=device)
    assert np.allclose(nn.ReLU()(x).numpy(), [[0, 0.5, 2]])
    assert np.allclose(nn.Sigmoid()(x).numpy(), 1 / (1 + np.exp(-x.numpy())))
    assert np.allclose(nn.Tanh()(x).numpy(), np.tanh(x.numpy()))
    assert np.allclose(nn.LeakyReLU(0.1)(x).numpy(), [[-0.1, 0.5, 2]])
    assert nn.GELU()(x).shape == (1, 3) and nn.Identity()(x) is x
    assert np.allclose(nn.Softmax()(x).numpy().sum(), 1)
    assert nn.Flatten()(gg.ones(2, 3, 4, device=device)).shape == (2, 12)
    lin = nn.Linear(3, 2, device=device)
    np.testing.assert_allclose(lin(x).numpy(), x.numpy() @ lin.weight.numpy().T
                               + lin.bias.numpy(), rtol=1e-6)
    y = lin(x)
    assert type(y.grad_fn).__name__ == "Linear"  # one recorded node per layer


def test_mlp_structure_and_errors():
    m = nn.MLP([5, 7, 7, 2], activation="tanh")
    kinds = [type(layer).__name__ for layer in m]
    assert kinds == ["Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert len(m) == 5 and isinstance(m[-1], nn.Linear) and len(m[:2]) == 2
    assert "Linear(in_features=5, out_features=7, bias=True)" in repr(m)
    custom = nn.MLP([2, 3, 1], activation=lambda: nn.LeakyReLU(0.2))
    assert isinstance(custom[1], nn.LeakyReLU)
    with pytest.raises(ValueError, match="unknown activation"):
        nn.MLP([2, 3], activation="swish")
    with pytest.raises(ValueError, match="at least"):
        nn.MLP([2])
    with pytest.raises(TypeError, match="Module"):
        nn.Sequential(nn.ReLU(), "relu")
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(-1, 2)


def test_module_list_and_loss_modules(device):
    ml = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 1)])
    holder = nn.Module()
    holder.layers = ml
    assert len(list(holder.parameters())) == 4 and len(ml) == 2
    logits = gg.tensor([[2.0, 0.0], [0.0, 1.0]], device=device)
    labels = gg.tensor([0, 1], device=device)
    ce = nn.CrossEntropyLoss()(logits, labels).item()
    assert np.isclose(ce, np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0))]), rtol=1e-5)
    assert nn.MSELoss(reduction="sum")(logits, gg.zeros(2, 2, device=device)).item() == 5.0
    assert nn.BCEWithLogitsLoss()(logits, gg.zeros(2, 2, device=device)).shape == ()
    assert nn.BCELoss()(gg.full((2,), 0.5, device=device), gg.ones(2, device=device)).shape == ()
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")


def test_init_functions_are_seeded_and_checked(device):
    w = gg.empty(30, 40, device=device)
    gg.manual_seed(3)
    init.xavier_uniform_(w)
    bound = math.sqrt(6 / 70)
    assert np.abs(w.numpy()).max() <= bound
    gg.manual_seed(3)
    w2 = gg.empty(30, 40)
    init.xavier_uniform_(w2)
    np.testing.assert_array_equal(w.numpy(), w2.numpy())
    init.zeros_(w)
    assert not w.numpy().any()
    init.normal_(w, 0.0, 0.02)
    assert 0.015 < w.numpy().std() < 0.025
    init.kaiming_uniform_(w, nonlinearity="relu")
    assert np.abs(w.numpy()).max() <= math.sqrt(2) * math.sqrt(3 / 40)
    with pytest.raises(ValueError, match="at least 2 dims"):
        init.kaiming_uniform_(gg.empty(4))
    with pytest.raises(ValueError, match="nonlinearity"):
        init.calculate_gain("swish")
