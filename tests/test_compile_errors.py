"""gg.compile: what cannot be captured raises (or falls back), memory stays flat over replays,
and checkpoints move between compiled and eager training."""

from __future__ import annotations

import gc
import math
import tracemalloc
import warnings

import numpy as np
import pytest
from _helpers import compiled_train_step, train_step

import gpugrad as gg
import gpugrad.functional as F
from gpugrad import nn, optim


def _setup(device):
    gg.manual_seed(0)
    model = nn.MLP([6, 8, 3], device=device)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    x = gg.tensor(rng.standard_normal((5, 6)).astype(np.float32), device=device)
    y = gg.tensor(rng.integers(0, 3, 5), device=device)
    return model, opt, x, y


HOST_READS = {
    ".item()": lambda t: t.item(),
    "bool()": lambda t: bool(t > 0),
    "float()": lambda t: float(t),
    ".numpy()": lambda t: t.numpy(),
    ".tolist()": lambda t: t.tolist(),
}


@pytest.mark.parametrize("read", sorted(HOST_READS))
def test_host_reads_raise_naming_the_call(device, read):
    model, _, x, y = _setup(device)

    @gg.compile
    def f(x, y):
        loss = F.cross_entropy(model(x), y)
        if HOST_READS[read](loss):  # data-dependent Python
            return loss
        return loss * 2

    with pytest.raises(gg.CompileError) as info:
        f(x, y)
    msg = str(info.value)
    assert "gg.compile(" in msg and "host" in msg and "fallback='eager'" in msg
    assert ("item()" if read in ("bool()", "float()") else read.rstrip("()")) in msg
    assert isinstance(info.value, RuntimeError)


def test_accuracy_inside_is_recorded(device):
    """Comparisons, argmax and integer casts have no gradient but are recorded steps."""
    def run(compiled):
        model, opt, x, y = _setup(device)

        def step(x, y):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            hits = (logits.argmax(axis=1) == y).astype(np.int64).sum()
            return loss, hits, (logits > 0) & ~(logits > 1)

        fn = gg.compile(step) if compiled else step
        return [[t.numpy() for t in fn(x, y)] for _ in range(5)], fn

    eager, _ = run(False)
    compiled, fn = run(True)
    assert fn.traces == 1
    for a, b in zip(eager, compiled):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)


def test_arrays_computed_outside_the_recorded_ops_raise(device):
    model, _, x, y = _setup(device)
    y32 = gg.tensor(y.numpy().astype(np.int32), device=device)  # cast inside the loss: unrecorded

    @gg.compile
    def f(x, y):
        return F.cross_entropy(model(x), y)

    with pytest.raises(gg.CompileError, match="computed outside the recorded ops"):
        f(x, y32)


def test_scheduler_step_inside_raises(device):
    model, opt, x, y = _setup(device)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1)

    @gg.compile
    def f(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        return loss

    with pytest.raises(gg.CompileError, match="lr_scheduler step"):
        f(x, y)


def test_fallback_runs_eagerly_and_warns_once(device):
    model, opt, x, y = _setup(device)
    calls = []

    def step(x, y):
        calls.append(1)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()  # a host read: not capturable

    def run(fn):
        gg.manual_seed(0)
        for p, q in zip(model.parameters(), ref_params):
            p.data = q.copy()
        opt.state.clear()
        return [fn(x, y) for _ in range(4)]

    ref_params = [p.data.copy() for p in model.parameters()]
    eager = run(step)
    compiled = gg.compile(step, fallback="eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(compiled)
    assert [str(w.message) for w in caught if "gg.compile" in str(w.message)].__len__() == 1
    assert "runs eagerly from now on" in str(caught[0].message)
    assert result == eager and isinstance(result[0], float)
    assert compiled.eager_reason is not None and compiled.program is None
    assert len(calls) == 8  # every call ran the function once: no double step


def test_bad_arguments_and_options():
    with pytest.raises(ValueError, match="fallback"):
        gg.compile(lambda x: x, fallback="yes")
    with pytest.raises(TypeError, match="expected a function"):
        gg.compile(3)

    @gg.compile
    def f(x):
        return x

    with pytest.raises(TypeError, match="gg.tensor"):
        f(np.ones(3))


def test_backward_through_outside_graph_raises(device):
    w = gg.tensor(np.ones(3), device=device, requires_grad=True)
    outside = w * 2

    @gg.compile
    def f():
        outside.sum().backward()

    with pytest.raises(gg.CompileError, match="computed before the compiled function"):
        f()


def test_grad_hooks_stop_a_trace_even_when_registered_after_it(device):
    """Post-accumulate-grad hooks (DataParallel's) run Python code in the walk: a trace with
    them raises, and a program traced before one was registered is not replayed without it."""
    model, opt, x, y = _setup(device)
    calls = []

    @gg.compile
    def step(x, y):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step(x, y)
    step(x, y)
    assert step.traces == 1
    handle = next(model.parameters()).register_post_accumulate_grad_hook(calls.append)
    with pytest.raises(gg.CompileError, match="post-accumulate-grad hooks"):
        step(x, y)
    handle.remove()
    step(x, y)  # the hook is gone: the cached program replays again
    assert step.traces == 1 and not calls
    done = gg.autograd.register_backward_done_callback(lambda: calls.append("done"))
    try:
        with pytest.raises(gg.CompileError, match="backward-done callbacks"):
            step(x, y)
    finally:
        done.remove()


def test_a_replay_checks_its_own_indices(device):
    """The index checks run on every call (on a GPU deferred to the next host read, as eager)."""
    emb = nn.Embedding(5, 3, device=device)
    x = gg.tensor(np.arange(5.0), device=device)
    lookup = gg.compile(lambda i: emb(i).sum())
    pick = gg.compile(lambda i: x[i].sum())
    ok = gg.tensor(np.array([0, 4, 2]), device=device)
    for f in (lookup, pick):
        f(ok)
        f(ok)
        assert f.traces == 1
    with pytest.raises(ValueError, match=r"index -1 at position \(1,\) .* out of range \[0, 5\)"):
        lookup(gg.tensor(np.array([0, -1, 2]), device=device)).item()
    with pytest.raises(IndexError, match="7 is out of bounds"):
        pick(gg.tensor(np.array([0, 7, 2]), device=device)).item()
    assert lookup.traces == pick.traces == 1  # replays, not new traces, raised


def test_replays_raise_no_floating_point_warnings_and_leave_numpy_as_it_was(device):
    """exp(1000) is inf in eager ops without a warning; a replay is as quiet, and afterwards
    NumPy warns as before (also after a replay that raised)."""
    x = gg.tensor(np.array([1000.0, 1.0], np.float32), device=device)
    emb = nn.Embedding(2, 1, device=device)
    f = gg.compile(lambda x, i: gg.exp(x) * 2 + emb(i).sum())
    i = gg.tensor(np.array([0, 1]), device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            assert np.isinf(f(x, i).numpy()[0])
        with pytest.raises(ValueError, match="out of range"):
            f(x, gg.tensor(np.array([0, 5]), device=device)).item()
        with pytest.raises(RuntimeWarning, match="overflow"):
            np.exp(np.float32(1000))
    assert f.traces == 1


def test_fill_inside_raises(device):
    w = gg.tensor(np.ones(3), device=device)

    @gg.compile
    def f(x):
        w.zero_()
        return x + w

    with pytest.raises(gg.CompileError, match="in-place update"):
        f(gg.tensor(np.ones(3), device=device))


def test_cache_is_bounded_lru(device):
    @gg.compile
    def f(x):
        return x * 2

    f.cache_size = 2
    for n in (1, 2, 3, 1):
        f(gg.tensor(np.ones(n), device=device))
    assert f.traces == 4 and len(f.programs) == 2  # n=1 was evicted by n=3
    for n in (1, 3, 1, 3):  # both cached: replays, whichever ran last
        np.testing.assert_array_equal(f(gg.tensor(np.ones(n), device=device)).numpy(), [2] * n)
    assert f.traces == 4
    f(gg.tensor(np.ones(2), device=device))  # evicts n=1 (n=3 was used last)...
    f(gg.tensor(np.ones(3), device=device))
    assert f.traces == 5
    f(gg.tensor(np.ones(1), device=device))  # ...so n=1 traces again
    assert f.traces == 6

    f.cache_size = 0  # nothing kept: every new trace is dropped, even for a repeated call
    for _ in range(2):
        np.testing.assert_array_equal(f(gg.tensor(np.ones(4), device=device)).numpy(), [2] * 4)
    assert f.traces == 8 and not f.programs

    @gg.compile
    def g(a, b):
        return a - b

    x = gg.tensor(np.ones(2), device=device)
    y = gg.tensor(np.zeros(2), device=device)
    np.testing.assert_array_equal(g(x, x).numpy(), [0, 0])
    np.testing.assert_array_equal(g(x, y).numpy(), [1, 1])  # no longer aliased: a new trace
    assert g.traces == 2


def test_no_memory_growth_over_many_replays():
    model, opt, x, y = _setup("cpu")

    @gg.compile
    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    for _ in range(20):
        step(x, y)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(1000):
            step(x, y)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 64 * 1024, grown  # steady state: each replay frees what it made


@pytest.mark.parametrize("first", ["compiled", "eager"])
def test_checkpoint_moves_between_compiled_and_eager(device, tmp_path, first):
    """Save after some steps of one kind, resume with the other: the same bits as all eager."""
    def make():
        gg.manual_seed(0)
        model = nn.MLP([6, 8, 3], device=device)
        return model, optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    rng = np.random.default_rng(3)
    data = [(gg.tensor(rng.standard_normal((5, 6)).astype(np.float32), device=device),
             gg.tensor(rng.integers(0, 3, 5), device=device)) for _ in range(8)]

    def stepper(model, opt, compiled):
        return (compiled_train_step if compiled else train_step)(model, opt)

    model, opt = make()
    ref = stepper(model, opt, False)
    ref_losses = [ref(x, y).numpy() for x, y in data]

    model, opt = make()
    run = stepper(model, opt, first == "compiled")
    losses = [run(x, y).numpy() for x, y in data[:4]]
    path = tmp_path / "ckpt.gg"
    gg.save({"model": model.state_dict(), "opt": opt.state_dict()}, path)

    model, opt = make()
    ckpt = gg.load(path, device=device)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    run = stepper(model, opt, first != "compiled")
    losses += [run(x, y).numpy() for x, y in data[4:]]
    np.testing.assert_array_equal(np.array(losses), np.array(ref_losses))


def test_constants_made_inside_are_fine_random_ones_raise(device):
    @gg.compile
    def f(x):
        y = x * gg.ones(3, device=device) + gg.arange(3, device=device).astype(np.float32)
        return y[[2, 0]]  # an index list: a constant array

    x = gg.tensor(np.ones(3, np.float32), device=device)
    f(x)
    np.testing.assert_array_equal(f(x).numpy(), [3.0, 1.0])
    assert f.traces == 1

    @gg.compile
    def noisy(x):
        return x + gg.randn(3, device=device)

    with pytest.raises(gg.CompileError, match="random"):
        noisy(x)


def test_tensor_copied_from_a_traced_tensor_raises(device):
    @gg.compile
    def f(x):
        return gg.tensor(x * 2) + 1

    with pytest.raises(gg.CompileError, match="clone"):
        f(gg.tensor(np.ones(3), device=device))


def test_infinite_and_nan_numbers_as_op_arguments(device):
    def g(x):
        return gg.clip(x, -math.inf, 2.0), x * math.nan, gg.maximum(x, math.inf)

    f = gg.compile(g)
    x = gg.tensor(np.array([1.0, 3.0]), device=device)
    f(x)
    for a, b in zip(f(x), g(x)):  # the replay (inf and nan are constants, not names)
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert f.traces == 1
