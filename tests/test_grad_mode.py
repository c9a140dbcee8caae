"""Grad modes: ``gg.no_grad()`` / ``gg.enable_grad()`` as context managers and decorators (with
or without parentheses), nested and restored on errors, thread-local, and one object shared by
nested blocks or by threads."""

from __future__ import annotations

import threading

import pytest
from _helpers import T

import gpugrad as gg


def test_no_grad_and_enable_grad_context_managers(device):
    x = T([1.0], device, requires_grad=True)
    assert gg.is_grad_enabled()
    with gg.no_grad():
        assert not gg.is_grad_enabled()
        y = x * 2
        assert not y.requires_grad and y.grad_fn is None
        with gg.enable_grad():
            assert gg.is_grad_enabled()
            assert (x * 2).requires_grad
            with gg.no_grad():
                assert not (x * 2).requires_grad
            assert (x * 2).requires_grad
        assert not (x * 2).requires_grad
    assert gg.is_grad_enabled() and (x * 2).requires_grad
    with pytest.raises(KeyError), gg.no_grad():
        raise KeyError("boom")
    assert gg.is_grad_enabled()


def test_no_grad_and_enable_grad_decorators(device):
    x = T([1.0], device, requires_grad=True)

    @gg.no_grad()
    def frozen(t):
        return t * 2, gg.is_grad_enabled()

    @gg.enable_grad()
    def live(t):
        return t * 2

    y, enabled = frozen(x)
    assert not enabled and not y.requires_grad
    assert frozen.__name__ == "frozen"
    with gg.no_grad():
        assert live(x).requires_grad
        assert not gg.is_grad_enabled()
    assert gg.is_grad_enabled()

    @gg.no_grad()
    def failing():
        raise ValueError("x")

    with pytest.raises(ValueError):
        failing()
    assert gg.is_grad_enabled()


def test_bare_decorators_and_one_context_object_entered_nested(device):
    x = T([1.0], device, requires_grad=True)

    @gg.no_grad
    def frozen(t):
        return t * 2

    @gg.enable_grad
    def live(t):
        return t * 2

    assert not frozen(x).requires_grad and frozen.__name__ == "frozen"
    with gg.no_grad():
        assert live(x).requires_grad
    # One object entered twice (nested) restores each level's own previous mode.
    off, on = gg.no_grad(), gg.enable_grad()
    with off:
        with on:
            with off:
                assert not gg.is_grad_enabled()
            assert gg.is_grad_enabled()
        assert not gg.is_grad_enabled()
    assert gg.is_grad_enabled()


def test_one_context_object_shared_by_threads(device):
    """Each thread restores its own previous mode, even through a shared ``no_grad`` object."""
    shared = gg.no_grad()
    entered, release = threading.Event(), threading.Event()
    after = {}

    def worker():
        with gg.no_grad():  # this thread was already off: leaving ``shared`` keeps it off
            with shared:
                entered.set()
                release.wait(10)
            after["worker"] = gg.is_grad_enabled()

    th = threading.Thread(target=worker)
    th.start()
    assert entered.wait(10)
    with shared:
        release.set()
        th.join(10)
    assert after == {"worker": False}
    assert gg.is_grad_enabled()


def test_grad_mode_is_thread_local(device):
    x = T([1.0], device, requires_grad=True)
    inside, release = threading.Event(), threading.Event()
    seen = {}

    def worker():
        with gg.no_grad():
            seen["enabled"] = gg.is_grad_enabled()
            inside.set()
            release.wait(10)
            seen["records"] = (x * 2).requires_grad

    th = threading.Thread(target=worker)
    th.start()
    assert inside.wait(10)
    try:
        assert gg.is_grad_enabled()  # the worker's no_grad does not leak into this thread
        assert (x * 2).requires_grad
    finally:
        release.set()
        th.join(10)
    assert seen == {"enabled": False, "records": False}
    # and a new thread starts with grad enabled even while this one is in no_grad
    with gg.no_grad():
        th = threading.Thread(target=lambda: seen.__setitem__("fresh", gg.is_grad_enabled()))
        th.start()
        th.join(10)
    assert seen["fresh"] is True
