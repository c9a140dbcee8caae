"""Every public op, loss and layer (``_layout_cases``) on inputs in every memory layout:
C-contiguous, Fortran order, transposed views, the first two axes swapped, strided slices
(every other row; every other column from an offset), negative strides and zero-stride
broadcast views, each built from the same values (see ``_layouts``). Forward results and every
input's gradient (first order, and second order through the graph-mode rules) must equal the
C-contiguous run -- bit for bit where the op is elementwise, within float64 1e-12 / float32 1e-5
where a reduction or scatter-add may sum in another order -- and in float64 also match a NumPy
reference (forward) and finite differences of it (gradients). No op may modify its inputs, gaps
included. Layouts are applied to all inputs at once and, for ops of several inputs, to one input
at a time. Also: ``gg.tensor``, ``gg.gradcheck`` (in test_gradcheck) and optimizer state take
sources of any layout."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from _layout_cases import CASES
from _layouts import (
    LAYOUTS,
    Case,
    broadcast_values,
    fd_grads,
    place,
    run,
    run_second_order,
)

import gpugrad as gg
from gpugrad.backend import fused_enabled, set_fused


def _combos(case: Case) -> list[tuple[str, ...]]:
    """Every layout on all inputs at once; with several inputs, also each non-contiguous layout
    on one input while the others stay C-contiguous (mixed operands)."""
    n = len(case.args)
    deep = any(len(a.shape) >= 3 for a in case.args)
    combos = [(layout,) * n for layout in case.layouts if layout != "swap" or deep]
    if n > 1:
        for layout in ("F", "neg", "rows", "cols"):
            for i in range(n):
                combos.append(tuple(layout if j == i else "C" for j in range(n)))
    return combos


def _compare(got: list, want: list, exact: bool, dtype, what: str) -> None:
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None:
            continue
        assert g.shape == w.shape and g.dtype == w.dtype, (what, i, g.shape, w.shape, g.dtype,
                                                           w.dtype)
        if exact or g.dtype.kind not in "fc":
            np.testing.assert_array_equal(g, w, err_msg=f"{what}, #{i}")
        else:
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=f"{what}, #{i}")


def _check_reference(case: Case, got, values, fd, what: str) -> None:
    ref = case.ref(*values)
    refs = ref if isinstance(ref, tuple) else (ref,)
    for i, (g, r) in enumerate(zip(got.outputs, refs)):
        r = np.asarray(r)
        assert g.shape == r.shape, (what, i, g.shape, r.shape)
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12, err_msg=f"{what}: value #{i}")
    for i, (g, f) in enumerate(zip(got.grads, fd)):
        if g is not None and f is not None:
            np.testing.assert_allclose(g, f, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{what}: gradient of input {i} vs finite "
                                               "differences")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_layout_matches_contiguous(case: Case, device: str) -> None:
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    plain = [arg.draw(rng) for arg in case.args]
    bcast = [broadcast_values(v) for v in plain]
    modes = [True, False] if case.fused and device != "cpu" else [None]
    prev = fused_enabled()
    try:
        for mode in modes:
            if mode is not None:
                set_fused(mode)
            _all_layouts(case, device, plain, bcast)
    finally:
        set_fused(prev)


def _weights(case: Case, device: str, values: list, seed: int) -> list[np.ndarray]:
    """Random weights of the shapes of ``case.fn``'s outputs on ``values``; 0 for outputs that
    carry no gradient (running statistics), which finite differences must then ignore too."""
    outs = case.fn(*[gg.tensor(v, dtype=v.dtype, device=device,
                               requires_grad=arg.differentiable)
                     for arg, v in zip(case.args, values)])
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, size=o.shape) * o.requires_grad
            for o in (outs if isinstance(outs, tuple) else (outs,))]


class _Runs:
    """One case's values (plain, and broadcast along axis 0), its weights, and what every
    layout is compared with: the C-contiguous run per dtype, and the finite differences."""

    def __init__(self, case: Case, device: str, plain: list, bcast: list) -> None:
        self.case, self.device = case, device
        self.values = {False: plain, True: bcast}
        self.weights = {False: _weights(case, device, plain, 1),
                        True: _weights(case, device, bcast, 2)}
        self._contiguous: dict = {}
        self._fd: dict = {}

    def contiguous(self, dtype, is_bcast: bool):
        key = (np.dtype(dtype), is_bcast)
        if key not in self._contiguous:
            values = self.values[is_bcast]
            self._contiguous[key] = run(self.case, self.device, dtype, ("C",) * len(values),
                                        values, self.weights[is_bcast])
        return self._contiguous[key]

    def fd(self, is_bcast: bool) -> list:
        if is_bcast not in self._fd:
            use = not is_bcast or self.case.fd_on_bcast
            self._fd[is_bcast] = fd_grads(self.case, self.values[is_bcast],
                                          self.weights[is_bcast]) if use else []
        return self._fd[is_bcast]


def _all_layouts(case: Case, device: str, plain: list, bcast: list) -> None:
    runs = _Runs(case, device, plain, bcast)
    for dtype in (np.float64, np.float32):
        for layouts in _combos(case):
            _one_layout(runs, dtype, layouts)


def _one_layout(runs: _Runs, dtype, layouts: tuple[str, ...]) -> None:
    case = runs.case
    is_bcast = "bcast" in layouts
    values, weights = runs.values[is_bcast], runs.weights[is_bcast]
    want = runs.contiguous(dtype, is_bcast)
    got = run(case, runs.device, dtype, layouts, values, weights)
    what = f"{case.name} on {runs.device}, {np.dtype(dtype)}, layouts {layouts}"
    _compare(got.outputs, want.outputs, case.exact, dtype, what + ": forward")
    _compare(got.grads, want.grads, case.exact, dtype, what + ": gradients")
    if dtype == np.float64 and case.ref is not None:
        _check_reference(case, got, values, runs.fd(is_bcast), what)


SECOND_ORDER = [c for c in CASES if c.ref is not None and c.name != "dropout_train"
                and any(a.differentiable for a in c.args)]


@pytest.mark.parametrize("case", SECOND_ORDER, ids=lambda c: c.name)
def test_second_order_every_layout_matches_contiguous(case: Case, device: str) -> None:
    """The graph-mode derivative rules (``create_graph=True``) on every layout: first-order
    gradients and the gradients of their weighted sum equal the C-contiguous run's."""
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    plain = [arg.draw(rng) for arg in case.args]
    values = {False: plain, True: [broadcast_values(v) for v in plain]}
    weights = {b: _weights(case, device, values[b], 1 + b) for b in values}
    for dtype in (np.float64, np.float32):
        want = {b: run_second_order(case, device, dtype, ("C",) * len(plain), values[b],
                                    weights[b]) for b in values}
        for layouts in _combos(case):
            b = "bcast" in layouts
            got = run_second_order(case, device, dtype, layouts, values[b], weights[b])
            what = f"{case.name} on {device}, {np.dtype(dtype)}, layouts {layouts}"
            _compare(got.outputs, want[b].outputs, False, dtype, what + ": first order")
            _compare(got.grads, want[b].grads, False, dtype, what + ": second order")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tensor_copies_every_layout_in_c_order(device: str, layout: str) -> None:
    """``gg.tensor`` of an array or tensor in any layout is a C-ordered copy, with a cast or
    without, from the host or from a tensor: NumPy's and CuPy's casts (and CuPy's host copies)
    keep a Fortran or strided source's order ("K"), and a tensor that is not C-contiguous is
    refused by the optimizers. Regression: ``gg.tensor(w.T, dtype="float32")`` of a float64
    ``w`` was Fortran-ordered, so ``SGD([it])`` raised "not contiguous"."""
    values = np.arange(12.0).reshape(3, 4)
    values = broadcast_values(values) if layout == "bcast" else values
    host, _ = place(values, layout, gg.device("cpu"))
    dev_arr, _ = place(values, layout, gg.device(device))
    sources = [host, dev_arr, gg.Tensor._wrap(dev_arr, gg.device(device))]
    for source in sources:
        for dtype in (None, "float32", "float64"):
            t = gg.tensor(source, dtype=dtype, device=device, requires_grad=True)
            assert t.data.flags.c_contiguous, (type(source).__name__, dtype, t.data.strides)
            np.testing.assert_array_equal(t.numpy(), values)
            assert not np.shares_memory(t.numpy(), host)
            gg.optim.SGD([t], lr=0.5)  # accepted: C-contiguous


@pytest.mark.parametrize("layout", ["F", "T", "rows", "neg", "bcast"])
def test_optimizer_state_loaded_from_any_layout(device: str, layout: str) -> None:
    """``load_state_dict`` copies state arrays of any layout into C-ordered state (updated in
    place by the optimizers; the CUDA kernels refuse anything else), and the next step equals
    the step from C-ordered state. Regression: a Fortran-ordered moment stayed Fortran-ordered
    (``xp.array(copy=True)`` keeps the order), so the fused CUDA Adam raised "must be
    C-contiguous" where the CPU stepped."""
    rng = np.random.default_rng(0)
    w0, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    moments = [rng.uniform(0.1, 1, (3, 4)) for _ in range(2)]
    moments = [broadcast_values(m) for m in moments] if layout == "bcast" else moments
    results = []
    for lay in ("C", layout):
        w = gg.tensor(w0, device=device, requires_grad=True)
        opt = gg.optim.Adam([w], lr=0.1)
        state = opt.state_dict()
        state["state"] = {0: {"step": 3, **{
            name: gg.Tensor._wrap(place(m, lay, gg.device(device))[0], gg.device(device))
            for name, m in zip(("exp_avg", "exp_avg_sq"), moments)}}}
        opt.load_state_dict(state)
        for name in ("exp_avg", "exp_avg_sq"):
            assert opt.state[w][name].data.flags.c_contiguous, (lay, name)
        w.grad = gg.tensor(g, device=device)
        opt.step()
        results.append([w.numpy()] + [opt.state[w][n].numpy() for n in ("exp_avg", "exp_avg_sq")])
    for got, want in zip(results[1], results[0]):
        np.testing.assert_array_equal(got, want)


def test_layouts_are_what_they_claim(device: str) -> None:
    """Each layout really is one (so no test above passes by comparing C with C), holds the
    values, and only the contiguous ones own C-ordered memory."""
    dev = gg.device(device)
    values = np.arange(24.0).reshape(2, 3, 4)
    for layout in LAYOUTS:
        v = broadcast_values(values) if layout == "bcast" else values
        arr, root = place(v, layout, dev)
        t = gg.Tensor._wrap(arr, dev)
        np.testing.assert_array_equal(t.numpy(), v)
        flags = arr.flags
        assert flags.c_contiguous == (layout == "C"), layout
        assert flags.f_contiguous == (layout in ("F", "T")), layout
        assert (arr.strides[0] == 0) == (layout == "bcast"), layout
        assert (min(arr.strides) < 0) == (layout == "neg"), layout
        assert (arr is root) == (layout in ("C", "F")), layout
        assert (arr.strides[-1] == 8 and 0 < arr.strides[0] < arr.strides[1]) == (layout == "swap")
    assert len({c.name for c in CASES}) == len(CASES)
