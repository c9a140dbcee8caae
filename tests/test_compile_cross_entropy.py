"""gg.compile's lowered cross-entropy (CPU): the fused loss and its gradient written into the
program's buffers give eager's bits for every reduction, and a batch the traced case does not
cover -- an ignored row, an out-of-range label -- replays as eager code runs it (the same loss,
the same error). On CUDA the same bodies replay the generic call."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.functional as F
from gpugrad import nn, optim
from gpugrad.ops.cross_entropy import CrossEntropy

CLASSES = 5


def _setup(device: str, dtype, reduction: str = "mean"):
    gg.manual_seed(0)
    model = nn.MLP([6, 8, CLASSES]).to(device=device, dtype=dtype)
    opt = optim.SGD(model.parameters(), lr=0.1)

    def step(x, y):
        loss = F.cross_entropy(model(x), y, reduction=reduction)
        opt.zero_grad()
        (loss.sum() if reduction == "none" else loss).backward()
        opt.step()
        return loss

    return model, step


def _batches(device: str, dtype, labels: list[list[int]]):
    rng = np.random.default_rng(1)
    return [(gg.tensor(rng.standard_normal((len(y), 6)).astype(dtype), device=device),
             gg.tensor(np.array(y, dtype=np.int64), device=device)) for y in labels]


def _ce_lowered(fn) -> bool:
    prog = fn.program
    return any(step.label == "CrossEntropy" and step.kind == "forward"
               and step.lowered is not None for step in prog.steps)


def _compare(device: str, dtype, reduction: str, labels: list[list[int]]) -> object:
    results = []
    for compiled in (False, True):
        model, step = _setup(device, dtype, reduction)
        fn = gg.compile(step) if compiled else step
        kept = [fn(x, y) for x, y in _batches(device, dtype, labels)]  # each call's loss, held
        losses = [t.numpy() for t in kept]  # read at the end: no later call overwrote one
        results.append((losses, {k: v.numpy() for k, v in model.state_dict().items()}, fn))
    (eager_losses, eager_w, _), (comp_losses, comp_w, fn) = results
    for e, c in zip(eager_losses, comp_losses):
        np.testing.assert_array_equal(e, c)  # bit for bit
    for k in eager_w:
        np.testing.assert_array_equal(eager_w[k], comp_w[k], err_msg=k)
    assert fn.traces == 1
    return fn


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_lowered_cross_entropy_is_bitwise_eager(device, dtype, reduction):
    rng = np.random.default_rng(0)
    labels = [list(rng.integers(0, CLASSES, 7)) for _ in range(12)]
    fn = _compare(device, dtype, reduction, labels)
    assert _ce_lowered(fn) == (device == "cpu")  # CUDA graphs replay the generic call


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ignored_rows_after_the_trace_replay_the_general_path(device, reduction):
    """Traced on a batch where every label is a class; later batches with ignored rows (and
    one with every row ignored) take the generic call, and the next plain batch the buffers."""
    labels = [[0, 1, 2, 3, 4, 0], [1, -100, 2, 2, -100, 4], [3, 3, 1, 0, 2, 4],
              [-100] * 6, [4, 3, 2, 1, 0, 0]]
    _compare(device, np.float32, reduction, labels)


def test_out_of_range_label_in_a_replay_raises_eagers_error(device):
    model, step = _setup(device, np.float32)
    fn = gg.compile(step)
    (x, y), = _batches(device, np.float32, [[0, 1, 2, 3]])
    fn(x, y)
    fn(x, y)  # a replay
    weights = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    for bad in ([0, 1, CLASSES, 3], [0, -1, 2, 3]):
        yb = gg.tensor(np.array(bad, dtype=np.int64), device=device)
        with pytest.raises(ValueError) as eager_err:
            F.cross_entropy(model(x), yb).numpy()  # .numpy(): a deferred CUDA check raises
        with pytest.raises(ValueError) as replay_err:
            fn(x, yb).numpy()
        assert str(replay_err.value) == str(eager_err.value)
    for k, v in model.state_dict().items():  # the failed steps updated nothing
        np.testing.assert_array_equal(v.numpy(), weights[k], err_msg=k)


def test_cross_entropy_without_grad_is_not_lowered():
    """Under no_grad the forward computes no gradient: the generic call (nothing to keep)."""
    gg.manual_seed(0)
    model = nn.MLP([6, 8, CLASSES])

    @gg.compile
    def evaluate(x, y):
        with gg.no_grad():
            return F.cross_entropy(model(x), y)

    (x, y), = _batches("cpu", np.float32, [[0, 1, 2, 3]])
    first, again = evaluate(x, y).numpy(), evaluate(x, y).numpy()
    np.testing.assert_array_equal(first, again)
    with gg.no_grad():
        np.testing.assert_array_equal(again, F.cross_entropy(model(x), y).numpy())
    assert not any(step.lowered is not None and step.label == CrossEntropy.__name__
                   for step in evaluate.program.steps)
