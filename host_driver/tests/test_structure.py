"""How bnnflow_board's modules depend on each other, read from their source (no import needed).

Imports inside functions count: a circle hidden in a function-local import
breaks as surely as one at the top, only later.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "bnnflow_board"
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = ast.parse(path.read_text(), str(path))
    return out


def _imports(name: str, tree: ast.Module, modules: dict[str, ast.Module]) -> list[tuple[str, list[str]]]:
    """(module, names) for every import of one of the package's modules, anywhere in ``tree``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
            for a in node.names:  # `from bnnflow_board.simulated import streams` imports a module
                sub = f"{node.module}.{a.name}"
                out.append((sub, []) if sub in modules else (node.module, [a.name]))
    return out


def test_no_import_circle() -> None:
    modules = _modules()
    graph = {m: {i for i, _ in _imports(m, t, modules) if i != m} for m, t in modules.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            assert state.get(n) != 1, "import circle: " + " -> ".join(
                [*path, m, n][path.index(n) if n in path else 0 :]
            )
            if n not in state:
                visit(n, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_no_private_name_crosses_modules() -> None:
    modules = _modules()
    crossing = [
        f"{m} imports {name} from {i}"
        for m, t in modules.items()
        for i, names in _imports(m, t, modules)
        for name in names
        if name.startswith("_") and not name.startswith("__") and i != m
    ]
    assert crossing == []


def test_the_deployment_format_needs_only_the_standard_library() -> None:
    """The host imports it next to numpy 2, the board next to numpy 1 on Python 3.10."""
    tree = _modules()[f"{PACKAGE}.deployformat"]
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names - {"__future__"} <= set(sys.stdlib_module_names), names


def test_functions_are_short() -> None:
    long = [
        f"{m}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for m, t in _modules().items()
        for node in ast.walk(t)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []
