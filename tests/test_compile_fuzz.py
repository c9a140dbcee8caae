"""Randomized compiled-vs-eager training steps: gg.compile's replays (CPU: lowered steps writing
into preallocated buffers) must give eager's bits.

Each seed draws a small program from the ops the CPU lowering covers and their neighbours --
Linear with and without bias (a layer sometimes applied twice), 2-D and 1-D matmul, relu,
+ - * / and maximum on same-shape, broadcast and Python-scalar operands (either side), unary
math, sigmoid, softmax, x ** 2, sum/mean/max over any axes, reshape/transpose/slice views,
intermediates read by several ops, returned values also used later, cross-entropy (mean/sum/
none, ignore_index, label batches with an ignored or out-of-range label) -- in float32 or
float64 (a parameter sometimes in the other), with arguments in C order, Fortran order or
strided, under SGD (plain, momentum, Nesterov) or Adam, gradients cleared in several ways, a
retained first backward, instructions run again after the update, learning rates and momentum
changed between calls, forward-only calls (under no_grad or not) of another compiled function,
and a returned value fed back as the next input. The program runs for a few calls eagerly and
compiled from the same state and data; every call's losses, returned values and errors, and the
parameters, ``.grad``'s and the input's ``.grad`` after it, must match bit for bit. Returned
tensors and ``.grad``'s held across calls must stay equal too (a replay reuses buffers; what a
caller holds must not change unless eager changes it as well).

The programs are drawn in ``_fuzz_programs.py``. ``GPUGRAD_FUZZ_PROGRAMS=5000`` (and
``GPUGRAD_FUZZ_START``, the first seed) runs a longer hunt.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

import numpy as np
import pytest
from _fuzz_programs import FuzzProgram

import gpugrad as gg
import gpugrad.functional as F
from gpugrad.compile.lower import lowering_enabled

PROGRAMS = int(os.environ.get("GPUGRAD_FUZZ_PROGRAMS", "300"))
START = int(os.environ.get("GPUGRAD_FUZZ_START", "0"))


def _bits(t) -> np.ndarray | None:
    if t is None:
        return None
    a = t.numpy()
    return a.view(np.dtype(f"u{a.dtype.itemsize}")) if a.dtype.kind == "f" else a


def _same(what: str, eager, compiled) -> None:
    e, c = _bits(eager), _bits(compiled)
    if e is None or c is None:
        assert e is None and c is None, f"{what}: eager {eager!r}, compiled {compiled!r}"
        return
    assert eager.dtype == compiled.dtype and e.shape == c.shape, \
        f"{what}: eager {eager.dtype}{e.shape}, compiled {compiled.dtype}{c.shape}"
    assert np.array_equal(e, c), f"{what}: eager\n{eager.numpy()!r}\ncompiled\n{compiled.numpy()!r}"


def _same_error(where: str, eager_err, err) -> None:
    if eager_err is not None or err is not None:
        assert type(err) is type(eager_err) and str(err) == str(eager_err), \
            f"{where}: eager raised {eager_err!r}, compiled {err!r}"


def _call(fn, args):
    try:
        return fn(*args), None
    except Exception as e:  # noqa: BLE001 -- compared with the other side's
        return None, e


def run_program(seed: int, device: str) -> tuple[FuzzProgram, Any]:
    """Run program ``seed`` eagerly and compiled; assert every observable bit is the same."""
    prog = FuzzProgram(seed)
    eager_step, eager_eval, eager_params, eager_opt = prog.build(device)
    step, evaluate, params, opt = prog.build(device)
    compiled, compiled_eval = gg.compile(step), gg.compile(evaluate)
    hold_rng = np.random.default_rng(seed + 1)
    held: list[tuple[str, Any, Any]] = []  # eager's and the replay's, to stay equal
    kept: list[tuple[str, Any, np.ndarray]] = []  # returned by a replay: never to change
    feed = None
    for call in range(prog.calls):
        lr, toggle = prog.hyper[call]
        for o in (eager_opt, opt):
            group = o.param_groups[0]
            if lr is not None:
                group["lr"] = lr
            if toggle:
                group["momentum"] = 0.9 - group["momentum"]
        ea, ca = prog.arguments(call, device), prog.arguments(call, device)
        if feed is not None:  # last call's returned value as this call's input
            e, c = feed
            ea = (e.detach().requires_grad_() if prog.x_grad else e.detach(),) + ea[1:]
            ca = (c.requires_grad_() if prog.x_grad else c,) + ca[1:]
            feed = None
        expect, eager_err = _call(eager_step, ea)
        got, err = _call(compiled, ca)
        where = f"seed {seed}, call {call}"
        _same_error(where, eager_err, err)
        if eager_err is None:
            fits = [(e, c) for e, c in zip(expect[0], got[0])
                    if c.shape == ea[0].shape and c.dtype == ea[0].dtype
                    and not any(c is p for p in params)]
            if fits and hold_rng.random() < 0.3:
                feed = fits[int(hold_rng.integers(len(fits)))]
            for k, (e, c) in enumerate(zip(expect[0] + expect[1], got[0] + got[1])):
                _same(f"{where}: returned value {k}", e, c)
                if hold_rng.random() < prog.hold and e is not None:
                    if any(c is p for p in params):  # the parameter itself, in both
                        held.append((f"returned parameter {k} of call {call}", e, c))
                    else:  # a new tensor (eager may return a .grad it later zeroes in place)
                        kept.append((f"returned value {k} of call {call}", c, c.numpy()))
        for k, (e, c) in enumerate(zip(eager_params, params)):
            _same(f"{where}: parameter {k}", e, c)
            _same(f"{where}: parameter {k} .grad", e.grad, c.grad)
            if e.grad is not None and hold_rng.random() < prog.hold:
                held.append((f"parameter {k} .grad after call {call}", e.grad, c.grad))
        if prog.x_grad:
            _same(f"{where}: input .grad", ea[0].grad, ca[0].grad)
            if ea[0].grad is not None and hold_rng.random() < prog.hold:
                held.append((f"input .grad of call {call}", ea[0].grad, ca[0].grad))
        for what, e, c in held:
            _same(f"{where}: held {what}", e, c)
        if prog.evals[call]:
            with gg.no_grad() if prog.evals[call] == "no_grad" else contextlib.nullcontext():
                ea, ca = prog.arguments(call, device), prog.arguments(call, device)
                expect, eager_err = _call(eager_eval, ea)
                got, err = _call(compiled_eval, ca)
            where = f"seed {seed}, forward-only call after call {call}"
            _same_error(where, eager_err, err)
            for k, (e, c) in enumerate(zip(expect or (), got or ())):
                _same(f"{where}: returned value {k}", e, c)
                if hold_rng.random() < prog.hold and not any(c is p for p in params):
                    kept.append((f"returned value {k} of {where}", c, c.numpy()))
        for what, c, bits in kept:
            _same(f"{where}: held {what}", gg.tensor(bits), c)
    return prog, compiled


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # eager optimizers on NaN
@pytest.mark.parametrize("seed", range(START, START + PROGRAMS))
def test_compiled_step_matches_eager_bitwise(device, seed):
    prog, compiled = run_program(seed, device)
    if device == "cpu" and lowering_enabled() and compiled.programs and any(
            i[0] == "linear" and i[1] == 0 and prog.param_dtypes[i[2]] == prog.dtype
            and (i[3] is None or prog.param_dtypes[i[3]] == prog.dtype) for i in prog.code):
        # the lowering took part (a Linear of the input, in its dtype, is always lowered)
        assert any(step.lowered is not None for p in compiled.programs for step in p.steps)


# -- regressions the fuzzer found, minimised ------------------------------------------------
def _replays_match(device: str, f, *arrays: np.ndarray, calls: int = 3) -> None:
    """``f`` eagerly and compiled (a trace, then replays) on the same arguments: same bits."""
    cf = gg.compile(f)
    for _ in range(calls):
        expect = f(*(gg.tensor(a, device=device) for a in arrays))
        got = cf(*(gg.tensor(a, device=device) for a in arrays))
        _same("result", expect, got)


def test_unary_of_a_transposed_view_keeps_eager_layout(device):
    """abs(x.T) is Fortran-ordered eagerly (a ufunc keeps its operand's layout), so mean() sums
    it in x's memory order; a C-ordered buffer in its place summed in another order and came
    out 1 ulp off (seed 152). A lowered step now requires eager's result to be C-ordered."""
    x = np.random.default_rng(2).uniform(-2, 2, (2, 3)).astype(np.float32)
    _replays_match(device, lambda x: gg.abs(x.T).mean(), x)


def test_argument_in_another_memory_order_traces_again(device):
    """Traced with a C-ordered argument, called with the same values Fortran-ordered: eager's
    abs(x) is then Fortran-ordered and mean() sums it in that order, so the replay of the
    C-ordered trace was 1 ulp off. The memory layout of a tensor argument is now part of the
    signature (a new trace)."""
    x = np.random.default_rng(2).uniform(-2, 2, (2, 3)).astype(np.float32)
    f = gg.compile(lambda x: gg.abs(x).mean())
    f(gg.tensor(x, device=device))
    for _ in range(2):
        fx = np.asfortranarray(x)
        arg = gg.from_numpy(fx) if device == "cpu" else gg.tensor(fx, device=device)
        _same("result", gg.abs(arg).mean(), f(arg))


def test_cross_entropy_of_transposed_logits(device):
    """Logits in Fortran order (z.T, or an op on a Fortran-ordered argument; seed 969): the
    every-row reference took a flat view of its shifted logits to subtract 1 at the labels, but
    for such logits that "view" was a copy, and the gradient lacked the -1 (eager was wrong,
    the replay right). Eager against float64 softmax - onehot, then compiled against eager."""
    z = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])  # (C, N): the logits are z.T
    labels = np.array([0, 1, 1])
    p = np.exp(z.T - z.T.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    expect = (p - np.eye(2)[labels]) / 3

    def step(z, y):
        loss = F.cross_entropy(z.T, y)
        loss.backward()
        return loss

    cf = gg.compile(step)
    for _ in range(3):
        ze = gg.tensor(z, device=device, requires_grad=True)
        zc = gg.tensor(z, device=device, requires_grad=True)
        y = gg.tensor(labels, device=device)
        loss = step(ze, y)
        np.testing.assert_allclose(ze.grad.numpy(), expect.T, rtol=1e-12, atol=1e-15)
        _same("loss", loss, cf(zc, y))
        _same("gradient", ze.grad, zc.grad)


def test_traced_backward_is_as_quiet_as_eager(device):
    """An inf gradient (g / 0 in Div's rule; seed 45) is an answer, not a warning: eager's walk
    silences floating-point warnings, and the traced walk now does too, so a trace under
    ``-W error`` no longer raises where eager runs."""
    w = gg.tensor([2.0, 0.0], device=device, requires_grad=True)

    def step(x):
        w.grad = None
        loss = (x / w).sum()
        loss.backward()
        return loss, w.grad

    cf = gg.compile(step)
    x = np.array([1.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for _ in range(3):
            loss, grad = step(gg.tensor(x, device=device, requires_grad=True))
            got_loss, got_grad = cf(gg.tensor(x, device=device, requires_grad=True))
            _same("loss", loss, got_loss)
            _same("w.grad", grad, got_grad)


def test_captured_tensor_in_another_memory_order_traces_again(device):
    """A tensor the function captures (read when a replay starts) given the same values in
    Fortran order between calls: eager's abs(k) follows k's layout, so the replay of the
    C-ordered trace was 1 ulp off; its entry check now compares strides too and traces again."""
    a = np.random.default_rng(2).uniform(-2, 2, (2, 3)).astype(np.float32)
    k = gg.tensor(a, device=device)

    def f(x):
        return gg.abs(k).mean() * x

    cf = gg.compile(f)
    x = gg.tensor(np.float32(1.0), device=device)
    cf(x)
    k.data = k.data.T.copy().T  # the same values, Fortran-ordered
    for _ in range(2):
        _same("result", f(x), cf(x))
