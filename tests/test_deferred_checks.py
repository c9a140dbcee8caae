"""Device-side input checks are deferred on a GPU: the op queues its check and the next host read
(``.item()``, ``.numpy()``, ``gg.cuda.synchronize()``, ...) raises the same ValueError/IndexError
naming the op. On the CPU, where reading costs nothing, the op raises at once; one test body
covers both (and GPUGRAD_CHECKS=sync, which makes the GPU raise at once too). A training step on
a GPU reads nothing back (counted by backend.checks.host_reads); the emulator tier asserts the
same on its CuPy stand-in (tests/cuda_emulator/test_simt_train_step.py)."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import T, rand

import gpugrad as gg
from gpugrad import nn
from gpugrad.backend import checks


@pytest.fixture(autouse=True)
def _no_leftover_checks():
    checks.discard()  # a check left by an earlier failure must not raise in this test
    yield
    checks.discard()


def _raised_by_next_read(device, make, read=lambda out: out.numpy()):
    """The exception ``make()`` raises at once (CPU, sync mode) or the next read raises."""
    try:
        out = make()
    except (ValueError, IndexError) as exc:
        assert device == "cpu" or checks.sync_mode(), "a GPU op raised before any host read"
        return exc
    assert device != "cpu", "the CPU raises in the op"
    with pytest.raises((ValueError, IndexError)) as info:
        read(out)
    return info.value


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_bad_label_raises_by_the_next_read(device, fused, reduction):
    logits = T(rand((4, 3)), device, requires_grad=True)
    labels = T(np.array([0, 5, 1, -3]), device)
    exc = _raised_by_next_read(device, lambda: gg.nn.functional.cross_entropy(
        logits, labels, reduction=reduction))  # fmt: skip
    assert isinstance(exc, ValueError) and "cross_entropy: label 5 at row 1" in str(exc)


def test_bad_embedding_index_raises_by_the_next_read(device):
    emb = nn.Embedding(5, 2).to(device)
    exc = _raised_by_next_read(device, lambda: emb(T(np.array([[1, 7], [0, 2]]), device)))
    assert isinstance(exc, ValueError) and "index 7 at position (0, 1)" in str(exc)
    assert "Embedding(5, 2)" in str(exc)


def test_bad_integer_array_index_raises_by_the_next_read(device):
    x = T(rand((3, 4)), device)
    exc = _raised_by_next_read(device, lambda: x[T(np.array([0, 3]), device)])
    assert isinstance(exc, IndexError) and "index 3 is out of bounds for axis 0 with size 3" in \
        str(exc)  # fmt: skip
    exc = _raised_by_next_read(device, lambda: gg.take_along_axis(
        x, T(np.array([[0], [4], [1]]), device), 1))  # fmt: skip
    assert isinstance(exc, IndexError) and "index 4 is out of bounds for axis 1" in str(exc)


def test_bce_on_non_probabilities_raises_by_the_next_read(device):
    p, t = T(np.array([0.5, 1.5]), device), T(np.array([0.0, 1.0]), device)
    exc = _raised_by_next_read(device, lambda: gg.nn.functional.binary_cross_entropy(p, t))
    assert isinstance(exc, ValueError) and "binary_cross_entropy: every input value" in str(exc)


def test_valid_inputs_leave_nothing_pending(device):
    logits = T(rand((4, 3)), device)
    loss = gg.nn.functional.cross_entropy(logits, T(np.array([0, 2, 1, 0]), device))
    assert np.isfinite(loss.item())
    if device != "cpu":
        assert checks.pending(("cuda", gg.device(device).index)) == 0


def test_a_training_step_makes_no_host_read(device):
    if device == "cpu":
        pytest.skip("host reads are device-to-host transfers: a GPU (or the emulator tier)")
    if checks.sync_mode():
        pytest.skip("GPUGRAD_CHECKS=sync reads every check when it is made")
    rng = np.random.default_rng(0)
    emb = nn.Embedding(50, 8).to(device)
    mlp = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10)).to(device)
    opt = gg.optim.Adam(list(emb.parameters()) + list(mlp.parameters()), lr=1e-2)
    tokens = T(rng.integers(0, 50, (8, 4)), device)
    labels = T(rng.integers(0, 10, 8), device)

    def step():
        opt.zero_grad()
        loss = gg.nn.functional.cross_entropy(mlp(emb(tokens).reshape(8, 32)), labels)
        loss.backward()
        opt.step()
        return loss

    step()
    gg.cuda.synchronize()  # settles the first step's checks
    before = checks.host_reads()
    for _ in range(3):
        loss = step()
    assert checks.host_reads() == before, "a training step read device memory back"
    assert np.isfinite(loss.item()) and checks.host_reads() > before
