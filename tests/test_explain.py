"""gg.explain and gg.to_dot on the worked example h = 1 / (1 + exp(-w·x)) at x = 1, w = 0."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpugrad as gg


def worked_example(device):
    x = gg.tensor(1.0, device=device)
    x.name = "x"
    w = gg.tensor(0.0, device=device, requires_grad=True)
    w.name = "w"
    h1 = w * x
    h1.name = "h1"
    h2 = -h1
    h2.name = "h2"
    h3 = gg.exp(h2)
    h3.name = "h3"
    h4 = 1 + h3
    h4.name = "h4"
    h5 = 1 / h4
    h5.name = "h5"
    return x, w, h5


def _rows(table):
    return {r.name: r for r in table.rows}


def _check_table(table):
    rows = _rows(table)
    assert [r.name for r in table.rows if r.name.startswith("h")] == ["h1", "h2", "h3", "h4", "h5"]
    values = [float(np.asarray(rows[f"h{i}"].value)) for i in range(1, 6)]
    np.testing.assert_allclose(values, [0, 0, 1, 2, 0.5])
    local = {name: {k: float(np.asarray(v)) for k, v in rows[name].local.items()}
             for name in ("h1", "h2", "h3", "h4", "h5")}
    assert local["h1"]["w"] == pytest.approx(1.0)
    assert local["h2"] == {"h1": pytest.approx(-1.0)}
    assert local["h3"] == {"h2": pytest.approx(1.0)}
    assert local["h4"] == {"h3": pytest.approx(1.0)}
    assert local["h5"] == {"h4": pytest.approx(-0.25)}
    upstream = [float(np.asarray(rows[f"h{i}"].upstream)) for i in range(1, 6)]
    np.testing.assert_allclose(upstream, [0.25, -0.25, -0.25, -0.25, 1])
    assert rows["w"].op == "input" and float(np.asarray(rows["w"].upstream)) == 0.25
    assert rows["x"].op == "constant" and float(np.asarray(rows["x"].value)) == 1.0
    assert table.rows.index(rows["w"]) < table.rows.index(rows["h1"])  # inputs first
    assert rows["h1"].op == "mul(w, x)" and rows["h2"].op.startswith("neg(h1")
    assert rows["h5"].op == "div(1, h4)"


def test_worked_example_gradient(device):
    _, w, h5 = worked_example(device)
    assert h5.item() == pytest.approx(0.5)
    h5.backward()
    assert w.grad.item() == pytest.approx(0.25)


def test_explain_before_and_after_backward(device):
    _, w, h5 = worked_example(device)
    before = gg.explain(h5)
    _check_table(before)
    h5.backward()  # frees the saved arrays; explain replays, so it still works
    after = gg.explain(h5)
    _check_table(after)
    assert str(before) == str(after)
    assert w.grad.item() == pytest.approx(0.25)  # explain did not touch .grad
    gg.explain(h5)
    assert w.grad.item() == pytest.approx(0.25)


def test_explain_str_contains_rows(device):
    _, _, h5 = worked_example(device)
    text = str(gg.explain(h5))
    lines = text.splitlines()
    assert "node" in lines[0] and "upstream" in lines[0]
    assert len(lines) == 2 + 7  # header, rule, 2 leaves + 5 ops
    row = {ln.split("|")[0].strip(): [c.strip() for c in ln.split("|")] for ln in lines[2:]}
    assert row["h5"][1] == "div(1, h4)" and row["h5"][2] == "0.5"
    assert "∂h5/∂h4 = -0.25" in row["h5"][3] and row["h5"][4] == "1"
    assert row["h1"][4] == "0.25" and row["h2"][4] == "-0.25"
    assert "∂h2/∂h1 = -1" in row["h2"][3]
    assert row["h4"][2] == "2" and row["h3"][2] == "1"
    assert repr(gg.explain(h5)) == text


def test_explain_unnamed_and_vector(device):
    a = gg.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = (a * a).sum()
    table = gg.explain(y)
    assert len(table.rows) == 3  # the leaf, mul, sum
    mul = table.rows[1]
    np.testing.assert_allclose(np.asarray(mul.value), [1.0, 4.0])
    np.testing.assert_allclose(np.asarray(mul.upstream), [1.0, 1.0])
    assert str(table)
    leaf = gg.explain(a)
    assert len(leaf.rows) == 1 and leaf.rows[0].op == "input"


def test_to_dot(device):
    _, _, h5 = worked_example(device)
    dot = gg.to_dot(h5)
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}") == 1
    body = dot.splitlines()[1:-1]
    assert all(ln.rstrip().endswith(";") for ln in body), dot
    node_ids = set(re.findall(r"^\s*(\w+) \[", dot, re.M))
    ops = [ln for ln in body if re.search(r'label="h\d\\n\w+"', ln)]
    assert len(ops) == 5  # one node per op
    for name, op in (("h1", "mul"), ("h2", "neg"), ("h3", "exp"), ("h4", "add"), ("h5", "div")):
        assert f'label="{name}\\n{op}"' in dot
    edges = re.findall(r"^\s*(\w+) -> (\w+);", dot, re.M)
    assert len(edges) == 8  # w, x -> h1; h1 -> h2 -> h3; 1, h3 -> h4; 1, h4 -> h5
    assert all(a in node_ids and b in node_ids for a, b in edges)
    h5.backward()
    assert gg.to_dot(h5) == dot
