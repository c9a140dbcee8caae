"""The import graph of a package, read with ``ast`` (nothing is imported), and the two rules
gpugrad's layering test enforces on it: no cycles, and no import of a higher layer.

Every ``import`` statement counts, wherever it is: at module level, inside functions, under
``if TYPE_CHECKING``. An edge goes from the importing module to the module whose code runs:
``from .ops import shape`` is an edge to ``pkg.ops.shape`` when that is a submodule, and
``from .ops import add`` an edge to ``pkg.ops`` (its ``__init__``). A package's ``__init__``
importing its own submodules is an ordinary edge; the implicit import of parent packages that
Python performs first is not counted (the package facade sits above everything it re-exports).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from pathlib import Path


def module_files(root: Path) -> dict[str, Path]:
    """``{"pkg.sub.mod": path}`` for every ``.py`` file of the package at ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: Path, known: Mapping[str, Path]) -> set[str]:
    """The modules of ``known`` that ``module`` (the file at ``path``) imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(name: str) -> None:
        # "import a.b.c" runs a.b.c; report the deepest known module of the dotted name
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in known else base)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    known = module_files(root)
    return {m: imports_of(m, p, known) for m, p in known.items()}


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        component.append(m)
                        if m == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def layer_of(module: str, layers: Sequence[tuple[str, int]]) -> int | None:
    """The layer of the longest matching prefix in ``layers`` ((prefix, layer) pairs)."""
    best, best_len = None, -1
    for prefix, layer in layers:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
            best, best_len = layer, len(prefix)
    return best


def upward_imports(graph: Mapping[str, set[str]],
                   layers: Sequence[tuple[str, int]]) -> list[tuple[str, str]]:
    """``(importer, imported)`` pairs where the imported module sits in a higher layer."""
    bad = []
    for module, targets in sorted(graph.items()):
        mine = layer_of(module, layers)
        for target in sorted(targets):
            theirs = layer_of(target, layers)
            if mine is not None and theirs is not None and theirs > mine:
                bad.append((module, target))
    return bad


def unassigned(graph: Mapping[str, set[str]], layers: Sequence[tuple[str, int]]) -> list[str]:
    return sorted(m for m in graph if layer_of(m, layers) is None)
