"""gg.compile's CPU buffer plan: lowered steps write into preallocated buffers (``out=``), shared
by slots whose lives do not overlap, and still give eager's bits; nothing a caller holds is ever
overwritten. On CUDA the same bodies check that nothing is lowered (graphs replay the calls)."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import compiled_train_step, train_step

import gpugrad as gg
import gpugrad.functional as F
from gpugrad import nn, optim
from gpugrad.compile.program import Program

STEPS = 50

OPTIMIZERS = {
    "sgd": lambda p: optim.SGD(p, lr=0.05),
    "sgd-nesterov": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True,
                                        weight_decay=1e-3),
    "adam": lambda p: optim.Adam(p, lr=1e-2),
    "adamw": lambda p: optim.AdamW(p, lr=1e-2),
    "rmsprop": lambda p: optim.RMSprop(p, lr=1e-3, momentum=0.5),
    "adagrad": lambda p: optim.Adagrad(p, lr=1e-2),
}


def _lowered(fn) -> int:
    return sum(step.lowered is not None for p in fn.programs for step in p.steps)


def _expect_lowering(fn, device: str) -> None:
    if device == "cpu":
        assert _lowered(fn) > 0 and fn.program.buffers
    else:  # CUDA replays the generic calls (captured into graphs)
        assert _lowered(fn) == 0


def _data(steps: int, batch: int, n_in: int, n_out: int, dtype, device: str):
    rng = np.random.default_rng(3)
    return [(gg.tensor(rng.standard_normal((batch, n_in)).astype(dtype), device=device),
             gg.tensor(rng.integers(0, n_out, batch), device=device)) for _ in range(steps)]


def _run(compiled: bool, device: str, make_model, opt: str = "sgd", dtype=np.float32,
         steps: int = STEPS, batch: int = 8, set_to_none: bool = True):
    gg.manual_seed(0)
    model = make_model().to(device=device, dtype=dtype)
    optimizer = OPTIMIZERS[opt](model.parameters())

    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=set_to_none)
        loss.backward()
        optimizer.step()
        return loss

    fn = gg.compile(step) if compiled else step
    n_in = next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features
    losses = [fn(x, y).numpy() for x, y in _data(steps, batch, n_in, 4, dtype, device)]
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    return np.array(losses), weights, fn


def _assert_same(eager, compiled) -> None:
    np.testing.assert_array_equal(eager[0], compiled[0])  # every step's loss, bit for bit
    for k in eager[1]:
        np.testing.assert_array_equal(eager[1][k], compiled[1][k], err_msg=k)


class _Views(nn.Module):
    """Views of a buffered activation: a reshape, a transpose, a slice (Functions returning
    views), then a product of two of them, so buffers are read through views in both passes."""

    def forward(self, x):
        n = x.shape[0]
        t = x.reshape(n, 4, 4).transpose(0, 2, 1)  # views of x's buffer
        return x * t.reshape(n, 16) + x[:, ::-1]  # a copy of the transposed view; a reversed view


def _mlp(extra: str | None = None, bias: bool = True):
    def make():
        layers = [nn.Linear(6, 16, bias=bias)]
        if extra == "batchnorm":
            layers.append(nn.BatchNorm1d(16))
        elif extra == "layernorm":
            layers.append(nn.LayerNorm(16))
        layers.append(nn.Tanh() if extra == "tanh" else nn.ReLU())
        if extra == "views":
            layers.append(_Views())
        if extra == "dropout":
            layers.append(nn.Dropout(0.25))
        layers += [nn.Linear(16, 16, bias=bias), nn.ReLU(), nn.Linear(16, 4, bias=bias)]
        return nn.Sequential(*layers)
    return make


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_lowered_mlp_bitwise_per_optimizer(device, opt, dtype):
    eager = _run(False, device, _mlp(), opt, dtype)
    compiled = _run(True, device, _mlp(), opt, dtype)
    _assert_same(eager, compiled)
    _expect_lowering(compiled[2], device)


@pytest.mark.parametrize("extra", ["dropout", "batchnorm", "layernorm", "tanh", "no-bias",
                                   "views"])
def test_lowered_layers_bitwise(device, extra):
    make = _mlp(None, bias=False) if extra == "no-bias" else _mlp(extra)
    eager = _run(False, device, make, "adam")
    compiled = _run(True, device, make, "adam")
    _assert_same(eager, compiled)
    _expect_lowering(compiled[2], device)


def test_grads_kept_by_zero_grad_set_to_none_false(device):
    """zero_grad(set_to_none=False) keeps each .grad and the walk adds into it: the .grad's
    array is held, so the buffer a gradient was written into is not written again."""
    eager = _run(False, device, _mlp(), "sgd-nesterov", set_to_none=False)
    compiled = _run(True, device, _mlp(), "sgd-nesterov", set_to_none=False)
    _assert_same(eager, compiled)


def test_table_ops_forward_and_backward_bitwise(device):
    """Every elementwise, reduction and matmul entry of the lowering table, in float64."""
    rng = np.random.default_rng(0)
    w = gg.tensor(rng.uniform(0.5, 1.5, (5, 5)), device=device, requires_grad=True)
    k = gg.tensor(rng.uniform(-1.0, 1.0, (5, 5)), device=device)

    def f(x):
        a = x @ w  # MatMul
        b = (a * x + a / (x + 2.0) - 0.5 * x) * 1.5  # Mul, Div, Add, Sub with arrays and scalars
        c = b.exp().log1p() + b.tanh() * b.sin() - b.cos() + (-b).abs().sqrt()
        d = c.square() + (a + 3.0).log() + (b * 0.01).expm1()
        d = d + k * x + k / (x + 1.0)  # one side needing no gradient (Div: a scratch buffer)
        loss = d.sum() + d.sum(axis=0).sum()  # Sum, full and along an axis
        loss.backward()
        return loss

    cf = gg.compile(f)
    for _ in range(4):
        x = gg.tensor(rng.uniform(0.1, 1.0, (5, 5)), device=device, requires_grad=True)
        x2 = gg.tensor(x.numpy(), device=device, requires_grad=True)
        w.grad = None
        expect = f(x).numpy()
        gw = w.grad.numpy()
        w.grad = None
        np.testing.assert_array_equal(cf(x2).numpy(), expect)
        np.testing.assert_array_equal(x2.grad.numpy(), x.grad.numpy())
        np.testing.assert_array_equal(w.grad.numpy(), gw)
    if device == "cpu":
        labels = {s.label for s in cf.program.steps if s.lowered is not None}
        assert {"MatMul", "Mul", "Div", "Add", "Sub", "Exp", "Log1p", "Tanh", "Sin", "Cos",
                "Neg", "Abs", "Sqrt", "Square", "Log", "Expm1", "Sum"} <= labels
        assert any(s.scratch for s in cf.program.steps)  # k / (x + 1): g / b into scratch


def _view_chain(x, w1, w2):
    """a's buffer is read through a transposed view after a's own last use, while b, made
    in between, has a's shape and dtype: it may not take a's buffer."""
    a = x @ w1
    v = a.T  # a view of a's memory; a itself is not used again
    b = x @ w2
    return (v * b).sum()


def _view_model_run(compiled: bool, device: str):
    rng = np.random.default_rng(5)
    w1 = gg.tensor(rng.standard_normal((4, 4)), device=device, requires_grad=True)
    w2 = gg.tensor(rng.standard_normal((4, 4)), device=device, requires_grad=True)

    def step(x):
        loss = _view_chain(x, w1, w2)
        loss.backward()
        with gg.no_grad():
            w1.sub_(0.1 * w1.grad)
            w2.sub_(0.1 * w2.grad)
        w1.grad = w2.grad = None
        return loss

    fn = gg.compile(step) if compiled else step
    xs = [gg.tensor(rng.standard_normal((4, 4)), device=device) for _ in range(5)]
    return np.array([fn(x).numpy() for x in xs]), w1.numpy(), w2.numpy(), fn


def test_views_keep_their_buffer_alive(device):
    eager = _view_model_run(False, device)
    compiled = _view_model_run(True, device)
    for a, b in zip(eager[:3], compiled[:3]):
        np.testing.assert_array_equal(a, b)
    _expect_lowering(compiled[3], device)


def test_alias_tracking_is_what_keeps_views_valid(monkeypatch):
    """Without following views to the buffer they share, the test above fails: b is written
    into a's buffer while the view of a is still to be read."""
    eager = _view_model_run(False, "cpu")
    monkeypatch.setattr(Program, "_alias_root", lambda self, value, slot: None)
    broken = _view_model_run(True, "cpu")
    assert not np.array_equal(eager[0][1:], broken[0][1:])


def test_buffers_are_reused_on_a_deep_mlp(device):
    gg.manual_seed(0)
    model = nn.MLP([8] + [32] * 6 + [3], device=device)
    opt = optim.SGD(model.parameters(), lr=0.01)

    step = compiled_train_step(model, opt)

    x, y = _data(1, 16, 8, 3, np.float32, device)[0]
    step(x, y)
    prog = step.program
    if device != "cpu":
        assert not prog.buffers
        return
    buffered = [s for s in prog.slots if s.buffer is not None]
    shared = [b for b in prog.buffers if len(b.slots) > 1]
    assert len(prog.buffers) < len(buffered) and shared
    assert all(not b.escapes for b in shared)  # a .grad's buffer is never shared
    held = sum(prog.slots[s].nbytes for b in shared for s in b.slots)
    assert sum(b.nbytes for b in shared) < held / 2  # the activations share a few buffers
    peak, total = prog.memory_plan()
    assert 0 < peak < total
    text = str(prog)
    assert "@B0" in text and "buffers (@Bn" in text and "out=" in text


def test_kept_grads_and_outputs_are_never_overwritten(device):
    """A caller holding last step's .grad or returned tensor keeps its values: the replay sees
    the buffer is held and writes into a new one."""
    gg.manual_seed(0)
    model = nn.Linear(5, 3, device=device)
    opt = optim.SGD(model.parameters(), lr=0.1)

    @gg.compile
    def step(x):
        out = model(x)  # returned: a lowered Linear's buffer
        opt.zero_grad()
        (out * out).sum().backward()
        opt.step()
        return out

    rng = np.random.default_rng(0)
    xs = [gg.tensor(rng.standard_normal((2, 5)).astype(np.float32), device=device)
          for _ in range(4)]
    step(xs[0])
    kept_out = step(xs[1])
    kept_grad = model.weight.grad
    out_bits, grad_bits = kept_out.numpy().copy(), kept_grad.numpy().copy()
    new_out = step(xs[2])
    np.testing.assert_array_equal(kept_out.numpy(), out_bits)
    np.testing.assert_array_equal(kept_grad.numpy(), grad_bits)
    assert model.weight.grad is not kept_grad
    assert not np.array_equal(new_out.numpy(), out_bits)
    del kept_out, kept_grad
    step(xs[3])  # nothing held now: the buffers are written again (no new arrays)
    if device == "cpu":
        before = {b: step.program.namespace[f"B{b}"] for b in range(len(step.program.buffers))}
        step(xs[3])
        step(xs[3])
        held = [b for b, arr in before.items() if step.program.namespace[f"B{b}"] is arr]
        assert held, "escaping buffers nobody holds should be reused"


def test_retrace_gets_its_own_buffers(device):
    def run(compiled):
        gg.manual_seed(0)
        model = _mlp()().to(device=device)
        opt = optim.Adam(model.parameters(), lr=1e-2)
        fn = (compiled_train_step if compiled else train_step)(model, opt)
        batches = _data(6, 8, 6, 4, np.float32, device) + _data(6, 5, 6, 4, np.float32, device)
        order = [0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11]  # the two signatures alternate
        return np.array([fn(*batches[i]).numpy() for i in order]), fn

    eager, (compiled, fn) = run(False), run(True)
    np.testing.assert_array_equal(eager[0], compiled)
    assert fn.traces == 2
    if device == "cpu":
        p8, p5 = fn.programs
        b8 = {id(p8.namespace[f"B{i}"]) for i in range(len(p8.buffers))}
        b5 = {id(p5.namespace[f"B{i}"]) for i in range(len(p5.buffers))}
        assert b8 and b5 and not b8 & b5


def test_float16_and_buffers_off_replay_the_generic_calls(device, monkeypatch):
    gg.manual_seed(0)
    model = nn.Linear(4, 3, device=device, dtype=np.float16)

    @gg.compile
    def f(x):
        return F.relu(model(x)).sum()

    x = gg.tensor(np.ones((2, 4), np.float16), device=device)
    f(x)
    assert _lowered(f) == 0  # float16 sums accumulate in float32: not in the table
    monkeypatch.setenv("GPUGRAD_COMPILE_BUFFERS", "0")
    eager = _run(False, device, _mlp(), "adam", steps=5)
    compiled = _run(True, device, _mlp(), "adam", steps=5)
    _assert_same(eager, compiled)
    assert _lowered(compiled[2]) == 0 and not compiled[2].program.buffers


def test_a_parameter_changing_dtype_after_the_trace_retraces(device):
    """The buffers have the traced layout: a replay finding a parameter of another dtype
    returns before running any step, and the function is traced again (no silent cast)."""
    gg.manual_seed(0)
    model = nn.Linear(4, 3, device=device)

    @gg.compile
    def f(x):
        return model(x)

    x = gg.tensor(np.ones((2, 4), np.float32), device=device)
    f(x)
    f(x)
    model.to(dtype=np.float64)  # float32 x times a float64 weight: a float64 result
    expect = model(x).numpy()
    out = f(x)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out.numpy(), expect)
    np.testing.assert_array_equal(f(x).numpy(), expect)  # the new program replays
    # (on CUDA nothing is lowered: the generic calls follow the new dtype without a trace)
    assert f.traces == (2 if device == "cpu" else 1)


def test_a_generic_result_changing_layout_mid_replay_raises():
    """A lowered step's operand made by a generic step is checked where it is used."""
    gg.manual_seed(0)
    w = gg.tensor(np.ones((3, 3), np.float32), requires_grad=True)
    cast = {"dtype": np.float32}

    def widen(t):  # an update recorded as one call: its result's dtype is read at each call
        return t.astype(cast["dtype"])

    @gg.compile
    def f(x):
        from gpugrad.autograd import traced_call

        h = traced_call(widen, x)
        return h @ w

    x = gg.tensor(np.ones((2, 3), np.float32))
    f(x)
    cast["dtype"] = np.float64
    with pytest.raises(gg.CompileError, match=r"changed from shape \(2, 3\) float32"):
        f(x)


def test_relu_backward_masks_inf_and_nan_exactly(device):
    """ReLU's gradient is exactly 0 at dead units even where the upstream gradient is inf or
    NaN (a select, not a multiply), and keeps -0.0 and NaN bits elsewhere: as eager."""
    x_host = np.array([[-1.0, 2.0, 0.0, 3.0], [4.0, -0.5, 5.0, -2.0]], np.float32)
    c_host = np.array([[np.inf, np.nan, np.nan, -0.0], [np.nan, -np.inf, np.inf, np.nan]],
                      np.float32)
    c = gg.tensor(c_host, device=device)

    def f(x):
        (F.relu(x) * c).sum().backward()

    cf = gg.compile(f)
    grads = []
    for fn in (f, cf, cf):  # eager, the trace, a replay
        x = gg.tensor(x_host, device=device, requires_grad=True)
        fn(x)
        grads.append(x.grad.numpy().view(np.int32))  # the bits: -0.0 and NaN payloads too
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_array_equal(grads[0], grads[2])
    if device == "cpu":
        assert any(s.lowered is not None and s.label == "ReLU" and s.kind == "backward"
                   for s in cf.program.steps)


def test_leaf_grads_written_from_buffers_or_accumulated(device):
    """A leaf's .grad is set to the buffer a lowered backward wrote (when it was None) or has
    the gradient added into it (when no zero_grad cleared it), as eager's walk does."""
    results = []
    for compiled in (False, True):
        gg.manual_seed(0)
        model = nn.MLP([6, 8, 3]).to(device)

        def step(x, y, clear, model=model):
            if clear:
                model.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        fn = gg.compile(step) if compiled else step
        grads = []
        for i, (x, y) in enumerate(_data(6, 5, 6, 3, np.float32, device)):
            fn(x, y, i % 3 == 0)  # cleared, then accumulated twice
            grads.append([p.grad.numpy() for p in model.parameters()])
        results.append(grads)
    for eager, comp in zip(*results):
        for e, c in zip(eager, comp):
            np.testing.assert_array_equal(e, c)
    if device == "cpu":
        assert fn.program.source.count(".grad is None and") == 4  # the buffered form
