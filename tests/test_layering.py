"""gpugrad's layering, enforced: no import cycle among its modules and no import of a higher layer,
counting every ``import`` statement (module level, inside functions, under ``TYPE_CHECKING``).

backend <- autograd/tensor <- ops <- nn/optim/functional/serialization/data/compile/distributed
<- cli/bench. ``creation`` and ``cuda`` sit with the ops (they make tensors on devices); the tools
over the tape (``explain``, ``gradcheck``) and ``parity`` with nn/optim. The package facade
(``gpugrad/__init__.py``, what ``import gpugrad as gg`` gives) re-exports layers up to nn/optim, so
only cli/bench may use it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from _import_graph import cycles, import_graph, unassigned, upward_imports

import gpugrad

ROOT = Path(gpugrad.__file__).resolve().parent

LAYERS = [
    ("gpugrad.backend", 0),
    ("gpugrad.tensor", 1),
    ("gpugrad.autograd", 1),
    ("gpugrad.grad_mode", 1),
    ("gpugrad.grad_hooks", 1),
    ("gpugrad.ops", 2),
    ("gpugrad.creation", 2),
    ("gpugrad.cuda", 2),
    ("gpugrad.nn", 3),
    ("gpugrad.optim", 3),
    ("gpugrad.functional", 3),
    ("gpugrad.serialization", 3),
    ("gpugrad.data", 3),
    ("gpugrad.compile", 3),
    ("gpugrad.distributed", 3),
    ("gpugrad.explain", 3),
    ("gpugrad.gradcheck", 3),
    ("gpugrad.parity", 3),
    ("gpugrad", 4),  # the facade: every module not listed above falls here and fails the test
    ("gpugrad.cli", 4),
    ("gpugrad.bench", 4),
    ("gpugrad.__main__", 4),
]
FACADE_ONLY = {"gpugrad"}  # the one module allowed to be "unlisted" under the "gpugrad" prefix


@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT)


def test_no_import_cycles(graph):
    found = cycles(graph)
    assert not found, "import cycles among gpugrad modules:\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_layers_import_only_downward(graph):
    bad = upward_imports(graph, LAYERS)
    assert not bad, "imports of a higher layer:\n" + "\n".join(f"{a} -> {b}" for a, b in bad)


def test_every_module_is_in_a_named_layer(graph):
    named = {prefix for prefix, _ in LAYERS} - {"gpugrad"}
    loose = [m for m in graph if m not in FACADE_ONLY
             and not any(m == p or m.startswith(p + ".") for p in named)]
    assert not loose, f"modules missing from the layer table: {loose}"
    assert not unassigned(graph, LAYERS)


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "fakepkg"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_checker_reports_a_planted_cycle_through_a_function_import(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "low.py": """
            def helper():
                from .high import thing  # a lazy import still makes a cycle
                return thing
        """,
        "high.py": "from .low import helper\nthing = 1\n",
        "other/__init__.py": "from ..low import helper\n",
    })
    graph = import_graph(root)
    assert graph["fakepkg.low"] == {"fakepkg.high"}
    assert cycles(graph) == [["fakepkg.high", "fakepkg.low"]]


def test_checker_reports_an_upward_import_and_resolves_submodules(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "from . import base, top\n",
        "base/__init__.py": "",
        "base/core.py": "import fakepkg.top.ui as ui\n",  # absolute, dotted, upward
        "top/__init__.py": "",
        "top/ui.py": "from ..base import core\nfrom ..base.core import ui as _\n",
    })
    graph = import_graph(root)
    assert graph["fakepkg.top.ui"] == {"fakepkg.base.core"}
    assert graph["fakepkg"] == {"fakepkg.base", "fakepkg.top"}
    layers = [("fakepkg.base", 0), ("fakepkg.top", 1), ("fakepkg", 2)]
    assert upward_imports(graph, layers) == [("fakepkg.base.core", "fakepkg.top.ui")]
    assert cycles(graph) == [["fakepkg.base.core", "fakepkg.top.ui"]]


def _outside_backend() -> list[Path]:
    return [p for p in sorted(ROOT.rglob("*.py")) if "backend" not in p.relative_to(ROOT).parts]


def test_only_the_backend_imports_cupy():
    import ast

    bad = []
    for path in _outside_backend():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            bad += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                    if n.split(".")[0] in ("cupy", "cupyx")]
    assert not bad, "\n".join(bad)


def test_no_cupy_only_array_methods_outside_the_backend():
    """``a.get()`` and ``a.set(host)`` exist only on CuPy arrays: outside gpugrad/backend/ arrays
    move through ``device.put``, ``backend.to_host`` and ``backend.copy_from_host``."""
    import ast

    bad = []
    for path in _outside_backend():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and (node.func.attr, len(node.args), len(node.keywords)) in
                    (("get", 0, 0), ("set", 1, 0))):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} calls .{node.func.attr}()")
    assert not bad, "\n".join(bad)
