"""End to end: an MLP learns the bundled digits, reruns are bit-identical, a resumed run equals an
uninterrupted one, memory stays flat over 500 steps, and (with a GPU) CPU and CUDA agree."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.functional as F
import gpugrad.nn as nn
import gpugrad.optim as optim
from gpugrad.data import DataLoader, load_digits
from gpugrad.parity import parity
from gpugrad.serialization import load, save

SPLIT = load_digits(seed=0)


def make(device, seed=0, opt="sgd", init_seed=None):
    gg.manual_seed(seed if init_seed is None else init_seed)
    model = nn.MLP([64, 64, 10], device=device)
    if opt == "sgd":
        o = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:
        o = optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(SPLIT.x_train, SPLIT.y_train, batch_size=64, seed=seed, device=device)
    return model, o, loader


def train(model, opt, loader, steps):
    losses = []
    while len(losses) < steps:
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    return losses


def accuracy(model, device):
    with gg.no_grad():
        logits = model(gg.tensor(SPLIT.x_test, device=device))
    return float((logits.numpy().argmax(axis=1) == SPLIT.y_test).mean())


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_mlp_learns_digits(device, opt):
    model, o, loader = make(device, opt=opt)
    losses = train(model, o, loader, 300)
    assert np.mean(losses[-20:]) < 0.2 < losses[0]
    assert accuracy(model, device) > 0.9


def test_same_seed_reruns_are_bit_identical():
    result = parity(steps=60, devices=("cpu", "cpu"))
    assert result.max_abs_diff == 0.0 and result.ok(0.0)
    a, b = result.losses.values()
    assert a == b and len(a) == 60
    m1, o1, l1 = make("cpu", seed=5)
    m2, o2, l2 = make("cpu", seed=5)
    train(m1, o1, l1, 40)
    train(m2, o2, l2, 40)
    for (k, x), y in zip(m1.state_dict().items(), m2.state_dict().values()):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=k)


def test_resume_from_checkpoint_equals_uninterrupted_run(device, tmp_path):
    model, opt, loader = make(device, opt="adam")
    sched = optim.StepLR(opt, step_size=1, gamma=0.9)
    full = train(model, opt, loader, 23)  # one epoch (1437 samples / 64 = 23 batches)
    sched.step()
    path = tmp_path / "ckpt.safetensors"
    save({"model": model.state_dict(), "optimizer": opt.state_dict(),
          "scheduler": sched.state_dict(), "epoch": loader.epoch}, path)
    full += train(model, opt, loader, 23)

    ckpt = load(path, device=device)
    m2, o2, l2 = make(device, opt="adam", init_seed=1)  # other weights, overwritten by the load
    m2.load_state_dict(ckpt["model"])
    o2.load_state_dict(ckpt["optimizer"])
    s2 = optim.StepLR(o2, step_size=1, gamma=0.9)
    s2.load_state_dict(ckpt["scheduler"])
    l2.epoch = ckpt["epoch"]
    resumed = train(m2, o2, l2, 23)
    assert o2.param_groups[0]["lr"] == pytest.approx(3e-3 * 0.9)
    np.testing.assert_array_equal(resumed, full[23:])


def test_no_memory_growth_over_500_steps():
    model, opt, loader = make("cpu")
    train(model, opt, loader, 30)  # warm up: optimizer state, caches
    gc.collect()
    tracemalloc.start()
    try:
        train(model, opt, loader, 20)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        train(model, opt, loader, 500)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # One step of this model holds ~100 KB of activations and gradients; a leak of one array
    # per step would add megabytes over 500 steps.
    assert after - before < 64 * 1024, f"memory grew by {after - before} bytes over 500 steps"


@pytest.mark.skipif(not gg.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_losses_agree_over_200_steps():
    result = parity(steps=200, devices=("cpu", "cuda"))
    assert result.max_rel_diff < 1e-4, str(result)
    assert result.devices == ["cpu", "cuda"] and len(result.losses["cuda"]) == 200


def test_dropout_runs_are_seeded_and_differ_from_no_dropout():
    with_dropout = parity(steps=30, devices=("cpu", "cpu"), dropout=0.3)
    assert with_dropout.max_abs_diff == 0.0 and with_dropout.config["dropout"] == 0.3
    plain = parity(steps=30, devices=("cpu",))
    assert with_dropout.losses["cpu"] != plain.losses["cpu"]  # the masks did change the run


@pytest.mark.skipif(not gg.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree_with_dropout():
    # Dropout masks are hashed on each device from the same host-drawn key: identical on both.
    result = parity(steps=200, devices=("cpu", "cuda"), dropout=0.3)
    assert result.max_rel_diff < 1e-4, str(result)


def test_parity_rejects_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        parity(steps=0, devices=("cpu",))
    with pytest.raises(ValueError, match="optimizer"):
        parity(steps=1, devices=("cpu",), optimizer="lbfgs")
