"""gg.compile: compiled training steps give the same bits as eager ones (same ops, same order)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _helpers import compiled_train_step

import gpugrad as gg
import gpugrad.functional as F
from gpugrad import nn, optim

STEPS = 50
N_IN, N_OUT = 12, 4


def _batches(n: int, batch: int = 8, last: int | None = None, device: str = "cpu"):
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        b = last if (last is not None and i == n - 1) else batch
        x = rng.standard_normal((b, N_IN)).astype(np.float32)
        y = rng.integers(0, N_OUT, b)
        out.append((gg.tensor(x, device=device), gg.tensor(y, device=device)))
    return out


def _mlp(extra: str | None, device: str):
    layers = [nn.Linear(N_IN, 10, device=device)]
    if extra == "batchnorm":
        layers.append(nn.BatchNorm1d(10, device=device))
    elif extra == "batchnorm-cumulative":
        layers.append(nn.BatchNorm1d(10, momentum=None, device=device))
    elif extra == "layernorm":
        layers.append(nn.LayerNorm(10, device=device))
    layers.append(nn.ReLU())
    if extra == "dropout":
        layers.append(nn.Dropout(0.3))
    layers.append(nn.Linear(10, N_OUT, device=device))
    return nn.Sequential(*layers)


OPTIMIZERS = {
    "sgd": lambda p: optim.SGD(p, lr=0.05),
    "sgd-momentum": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "sgd-nesterov": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda p: optim.Adam(p, lr=1e-2),
    "adam-wd": lambda p: optim.Adam(p, lr=1e-2, weight_decay=1e-2),
    "adamw": lambda p: optim.AdamW(p, lr=1e-2),
    "adam-amsgrad": lambda p: optim.Adam(p, lr=1e-2, amsgrad=True),
    "rmsprop": lambda p: optim.RMSprop(p, lr=1e-3, momentum=0.5),
    "adagrad": lambda p: optim.Adagrad(p, lr=1e-2),
}

SCHEDULERS = {
    "step": lambda o: optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
    "multistep": lambda o: optim.lr_scheduler.MultiStepLR(o, milestones=[5, 20], gamma=0.3),
    "exponential": lambda o: optim.lr_scheduler.ExponentialLR(o, gamma=0.95),
    "cosine": lambda o: optim.lr_scheduler.CosineAnnealingLR(o, T_max=10),
    "linear": lambda o: optim.lr_scheduler.LinearLR(o, start_factor=0.2, total_iters=10),
    "lambda": lambda o: optim.lr_scheduler.LambdaLR(o, lambda e: 1.0 / (1 + e)),
    "onecycle": lambda o: optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=STEPS + 1),
    "plateau": lambda o: optim.lr_scheduler.ReduceLROnPlateau(o, patience=1),
    "sequential": lambda o: optim.lr_scheduler.SequentialLR(
        o, [optim.lr_scheduler.LinearLR(o, start_factor=0.5, total_iters=3),
            optim.lr_scheduler.ExponentialLR(o, gamma=0.9)], milestones=[3]),
    "chained": lambda o: optim.lr_scheduler.ChainedScheduler(
        [optim.lr_scheduler.StepLR(o, step_size=3), optim.lr_scheduler.ExponentialLR(o, 0.9)]),
}


def _train(compiled: bool, device: str, *, extra=None, opt="sgd-momentum", sched=None,
           clip=None, batches=None, steps=STEPS):
    gg.manual_seed(0)
    model = _mlp(extra, device)
    optimizer = OPTIMIZERS[opt](model.parameters())
    scheduler = SCHEDULERS[sched](optimizer) if sched else None

    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        if clip == "norm":
            nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        elif clip == "value":
            nn.utils.clip_grad_value_(model.parameters(), 0.01)
        optimizer.step()
        return loss

    fn = gg.compile(step) if compiled else step
    losses = []
    for x, y in (batches or _batches(steps, device=device)):
        loss = fn(x, y)
        losses.append(loss.numpy())
        if scheduler is not None:
            if isinstance(scheduler, optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(losses[-1])
            else:
                scheduler.step()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    opt_state = [v.numpy() for st in optimizer.state.values() for v in st.values()
                 if isinstance(v, gg.Tensor)]
    return np.array(losses), state, opt_state, fn


def _assert_same(eager, compiled) -> None:
    np.testing.assert_array_equal(eager[0], compiled[0])  # bit for bit, every step
    assert eager[1].keys() == compiled[1].keys()
    for k in eager[1]:
        np.testing.assert_array_equal(eager[1][k], compiled[1][k], err_msg=k)
    assert len(eager[2]) == len(compiled[2])
    for a, b in zip(eager[2], compiled[2]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_optimizers_bitwise(device, opt, fused):  # fused kernels, then GPUGRAD_FUSED=0
    eager = _train(False, device, opt=opt)
    compiled = _train(True, device, opt=opt)
    _assert_same(eager, compiled)
    assert compiled[3].traces == 1  # one trace, 49 replays
    assert np.isfinite(eager[0]).all() and eager[0][-1] < eager[0][0]


@pytest.mark.parametrize("extra", ["dropout", "batchnorm", "batchnorm-cumulative", "layernorm"])
def test_layers_bitwise(device, extra, fused):
    _assert_same(_train(False, device, extra=extra, opt="adam"),
                 _train(True, device, extra=extra, opt="adam"))


@pytest.mark.parametrize("clip", ["norm", "value"])
def test_clipping_bitwise(device, clip):
    _assert_same(_train(False, device, clip=clip), _train(True, device, clip=clip))


@pytest.mark.parametrize("sched", sorted(SCHEDULERS))
def test_schedulers_bitwise(device, sched):
    """The learning rate is read from param_groups at every replay, not frozen by the trace."""
    eager = _train(False, device, sched=sched, steps=20)
    compiled = _train(True, device, sched=sched, steps=20)
    _assert_same(eager, compiled)
    assert compiled[3].traces == 1


def test_retrace_on_partial_batch_and_eval(device):
    batches = _batches(6, last=5, device=device)
    eager = _train(False, device, extra="batchnorm", batches=batches)
    compiled = _train(True, device, extra="batchnorm", batches=batches)
    _assert_same(eager, compiled)
    fn = compiled[3]
    assert fn.traces == 2 and len(fn.programs) == 2  # batch 8, then the last batch of 5

    gg.manual_seed(0)
    model = _mlp("batchnorm", device)

    @gg.compile
    def predict(x):
        return model(x)

    x = batches[0][0]
    a = predict(x)
    model.eval()
    b = predict(x)
    assert predict.traces == 2  # eval() is a new signature
    np.testing.assert_array_equal(b.numpy(), model(x).numpy())
    assert not np.array_equal(a.numpy(), b.numpy())
    model.train()
    predict(x)
    assert predict.traces == 2  # back to the first program


def test_replay_sees_state_changed_between_calls(device):
    """Parameters and hyperparameters are read at each replay: load_state_dict, editing lr."""
    gg.manual_seed(0)
    model = _mlp(None, device)
    opt = optim.SGD(model.parameters(), lr=0.1)

    step = compiled_train_step(model, opt)

    (x, y), = _batches(1, device=device)
    snapshot = {k: v.numpy() for k, v in model.state_dict().items()}
    first = step(x, y).numpy()
    step(x, y)
    model.load_state_dict({k: gg.tensor(v, device=device) for k, v in snapshot.items()})
    np.testing.assert_array_equal(step(x, y).numpy(), first)  # replay read the restored weights
    for g in opt.param_groups:
        g["lr"] = 0.0
    before = [p.numpy() for p in model.parameters()]
    step(x, y)
    for a, p in zip(before, model.parameters()):
        np.testing.assert_array_equal(a, p.numpy())  # lr 0: nothing moves


def test_returns_new_detached_tensors_and_structures(device):
    gg.manual_seed(0)
    w = gg.randn(3, 2, device=device, requires_grad=True)

    @gg.compile
    def f(x, scale=2.0):
        y = x @ w
        loss = (y * scale).sum()
        loss.backward()
        return {"loss": loss, "pair": (y, 7)}, w.grad

    x = gg.tensor(np.ones((4, 3), np.float32), device=device)
    r1, g1 = f(x)
    w.grad = None
    r2, g2 = f(x)
    assert f.traces == 1
    assert r2["pair"][1] == 7 and r2["loss"].grad_fn is None and not r2["loss"].requires_grad
    np.testing.assert_array_equal(r1["loss"].numpy(), r2["loss"].numpy())
    assert r1["pair"][0] is not r2["pair"][0]
    np.testing.assert_allclose(g2.numpy(), np.full((3, 2), 8.0))
    f(x, scale=3.0)
    assert f.traces == 2  # a Python number argument is part of the signature


def test_input_gradients_accumulate_like_eager(device):
    def f(x):
        (x * x).sum().backward()

    cf = gg.compile(f)
    for fn in (f, cf):
        x = gg.tensor(np.arange(4.0), device=device, requires_grad=True)
        fn(x)
        fn(x)  # no zero_grad: the second call adds
        np.testing.assert_array_equal(x.grad.numpy(), 4 * np.arange(4.0))


def test_program_listing(device):
    res = _train(True, device, extra="dropout", steps=2)
    text = str(res[3].program)
    assert "forward" in text and "backward" in text and "Linear" in text
    assert "Dropout" in text and "SGD.step_groups" in text and "SGD.zero_grad" in text
    assert "memory plan: peak" in text and "free" in text
    peak, total = res[3].program.memory_plan()
    assert 0 < peak < total
    assert gg.explain(res[3]) is res[3].program  # the static counterpart of gg.explain(t)
    with pytest.raises(ValueError, match="no program yet"):
        gg.explain(gg.compile(lambda x: x))


def test_manual_sgd_update_in_place(device):
    """``w -= lr * w.grad`` under no_grad rebinds w: the replay repeats the rebinding."""
    def run(compiled):
        gg.manual_seed(0)
        w = gg.randn(3, 1, device=device, requires_grad=True)
        x = gg.tensor(np.arange(6.0, dtype=np.float32).reshape(2, 3), device=device)

        def step(x):
            nonlocal w
            loss = ((x @ w) ** 2).mean()
            w.grad = None
            loss.backward()
            with gg.no_grad():
                w -= 0.01 * w.grad
            return loss

        fn = gg.compile(step) if compiled else step
        return [fn(x).numpy() for _ in range(5)], w.numpy()

    (l1, w1), (l2, w2) = run(False), run(True)
    np.testing.assert_array_equal(np.array(l1), np.array(l2))
    np.testing.assert_array_equal(w1, w2)
    assert not math.isclose(float(l1[0]), float(l1[-1]))


LOSSES = {
    "ce-smoothing": lambda out, y, t: F.cross_entropy(out, y, label_smoothing=0.1),
    "ce-weight": lambda out, y, t: F.cross_entropy(out, y, weight=t),
    "mse": lambda out, y, t: F.mse_loss(out, gg.ones_like(out)),
    "bce-logits": lambda out, y, t: F.binary_cross_entropy_with_logits(
        out, gg.zeros_like(out)),
    "nll": lambda out, y, t: F.nll_loss(gg.log_softmax(out, axis=1), y),
}


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_other_losses_and_tied_weights_bitwise(device, loss_name):
    """Label smoothing / class weights / indexing losses, and a weight used twice (its two
    gradients are summed, as eager does)."""
    def run(compiled):
        gg.manual_seed(0)
        lin = nn.Linear(N_IN, 6, device=device)
        head = nn.Linear(6, N_OUT, device=device)
        w_class = gg.tensor(np.linspace(0.5, 1.5, N_OUT, dtype=np.float32), device=device)
        opt = optim.SGD(list(lin.parameters()) + list(head.parameters()), lr=0.05,
                        momentum=0.5)

        def step(x, y):
            h = gg.tanh(lin(x))
            h = h + gg.tanh(h @ lin.weight[:, :6])  # lin.weight used a second time
            loss = LOSSES[loss_name](head(h), y, w_class)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        fn = gg.compile(step) if compiled else step
        losses = [fn(x, y).numpy() for x, y in _batches(10, device=device)]
        return np.array(losses), [p.numpy() for p in lin.parameters()]

    (l1, p1), (l2, p2) = run(False), run(True)
    np.testing.assert_array_equal(l1, l2)
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a, b)


def test_embedding_bitwise(device):
    def run(compiled):
        gg.manual_seed(0)
        emb = nn.Embedding(20, 5, device=device)
        head = nn.Linear(5, N_OUT, device=device)
        opt = optim.Adam(list(emb.parameters()) + list(head.parameters()), lr=1e-2)

        def step(idx, y):
            loss = F.cross_entropy(head(emb(idx).mean(axis=1)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        fn = gg.compile(step) if compiled else step
        rng = np.random.default_rng(0)
        out = []
        for _ in range(8):
            idx = gg.tensor(rng.integers(0, 20, (6, 3)), device=device)
            y = gg.tensor(rng.integers(0, N_OUT, 6), device=device)
            out.append(fn(idx, y).numpy())
        return np.array(out), emb.weight.numpy()

    (l1, w1), (l2, w2) = run(False), run(True)
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(w1, w2)


def test_retain_graph_two_backwards(device):
    def run(compiled):
        gg.manual_seed(0)
        w = gg.randn(4, 3, device=device, requires_grad=True)

        def step(x):
            nonlocal w
            y = (x @ w).tanh()
            y.sum().backward(retain_graph=True)
            (y * y).sum().backward()
            with gg.no_grad():
                w -= 0.1 * w.grad
            w.grad = None

        fn = gg.compile(step) if compiled else step
        x = gg.tensor(np.arange(8.0, dtype=np.float32).reshape(2, 4) / 8, device=device)
        for _ in range(4):
            fn(x)
        return w.numpy()

    np.testing.assert_array_equal(run(False), run(True))


def test_backward_with_a_gradient_tensor(device):
    def run(compiled):
        gg.manual_seed(0)
        w = gg.randn(3, 2, device=device, requires_grad=True)

        def step(x, g):
            (x @ w).backward(g)

        fn = gg.compile(step) if compiled else step
        x = gg.tensor(np.ones((4, 3), np.float32), device=device)
        for k in range(3):
            fn(x, gg.tensor(np.full((4, 2), k + 1.0, np.float32), device=device))
        return w.grad.numpy()

    np.testing.assert_array_equal(run(False), run(True))  # the gradient argument is an input


def test_method_decorator_and_object_arguments(device):
    """``@gg.compile`` on a method: ``self`` is an argument keyed by identity."""
    class Trainer:
        def __init__(self):
            gg.manual_seed(0)
            self.model = _mlp(None, device)
            self.opt = optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
            self.weight = gg.tensor(np.linspace(1, 2, N_OUT, dtype=np.float32), device=device)

        @gg.compile
        def step(self, x, y):
            loss = F.cross_entropy(self.model(x), y, weight=self.weight)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            return loss

        def eager_step(self, x, y):
            return Trainer.step.fn(self, x, y)

    a, b = Trainer(), Trainer()
    batches = _batches(6, device=device)
    la = [a.step(x, y).numpy() for x, y in batches]
    lb = [b.eager_step(x, y).numpy() for x, y in batches]
    np.testing.assert_array_equal(np.array(la), np.array(lb))
    assert Trainer.step.traces == 1 and a.step.program is not None
    b.step(*batches[0])
    assert Trainer.step.traces == 2  # another trainer: its own program


def test_gradient_accumulation_and_two_optimizers(device):
    """Two micro-batches per step (the second backward adds into .grad) and two optimizers."""
    def run(compiled):
        gg.manual_seed(0)
        body, head = nn.Linear(N_IN, 8, device=device), nn.Linear(8, N_OUT, device=device)
        opts = [optim.Adam(body.parameters(), lr=1e-2), optim.SGD(head.parameters(), lr=0.1)]

        def step(x1, y1, x2, y2):
            for o in opts:
                o.zero_grad()
            for x, y in ((x1, y1), (x2, y2)):
                (F.cross_entropy(head(gg.relu(body(x))), y) * 0.5).backward()
            for o in opts:
                o.step()
            return body.weight.grad

        fn = gg.compile(step) if compiled else step
        bs = _batches(8, device=device)
        grads = [fn(*bs[i], *bs[i + 1]).numpy() for i in range(0, 8, 2)]
        return grads, [p.numpy() for p in list(body.parameters()) + list(head.parameters())]

    (g1, p1), (g2, p2) = run(False), run(True)
    for a, b in zip(g1 + p1, g2 + p2):
        np.testing.assert_array_equal(a, b)
