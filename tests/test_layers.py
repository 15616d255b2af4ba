"""The layering of the packages: no import of a later stage, no import circle, imports in functions included.

Python resolves an import inside a function only when the function runs, so a
circle or an upward import hidden there never shows at import time; it shows
as a design that cannot be changed one layer at a time. The graph is read from
the source (every ``import`` and ``from ... import`` in every module, at any
depth), not from what an interpreter happens to load.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# bnnflow's stages, lowest first. A module may import its own stage and earlier
# ones, never a later one. Each entry is a module or a package (all its modules).
HOST_STAGES: list[list[str]] = [
    ["bnnflow", "bnnflow._compat", "bnnflow.errors", "bnnflow.cliutil", "bnnflow.layout"],
    ["bnnflow.data", "bnnflow.userdata", "bnnflow.models", "bnnflow.padding", "bnnflow.runs"],
    ["bnnflow.finnlib"],  # FINN and QONNX integration below every stage
    ["bnnflow.bnncpu"],  # the C engine's Python side, as a library
    ["bnnflow.training"],
    ["bnnflow.export"],
    ["bnnflow.hls"],
    ["bnnflow.cpu"],
    ["bnnflow.deploy"],
    ["bnnflow.bench"],
    ["bnnflow.demo", "bnnflow.bitstream_command", "bnnflow.cli", "bnnflow.__main__"],
]

# The board-side package (bnnflow-board), wherever it lives in this checkout.
BOARD_ROOTS = [ROOT / "host_driver" / "src", ROOT / "board" / "src"]
BOARD_STAGES: list[list[str]] = [
    # the deployment format (shared with the host) and the errors
    [
        "bnnflow_board",
        "bnnflow_board.errors",
        "bnnflow_board.deployformat",
        "bnnflow_board.hostbits",
        "bnnflow_board._qonnx",
    ],
    # reading a package, the board and the files; the engine, the overlay, the simulated board
    [
        "bnnflow_board.boards",
        "bnnflow_board.fsutil",
        "bnnflow_board.detect",
        "bnnflow_board.hwh",
        "bnnflow_board.package",
        "bnnflow_board.update_package",
        "bnnflow_board.report",
        "bnnflow_board.agreement",
        "bnnflow_board.cpu_engine",
        "bnnflow_board.overlay",
        "bnnflow_board.simulated",
    ],
    ["bnnflow_board.active_weights", "bnnflow_board.checks"],  # which weights run; the checks
    ["bnnflow_board.session"],  # a package opened on a board: checks, device, runner, engine
    ["bnnflow_board.bench", "bnnflow_board.weights"],  # the commands' work
    ["bnnflow_board.cli", "bnnflow_board.__main__"],
]


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        where = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{self.source} -> {self.target} ({where}:{self.line})"


def modules(src: Path, top: str) -> dict[str, Path]:
    """Module name -> file, for every module of package ``top`` under ``src``."""
    out = {}
    for path in sorted((src / top).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_edges(mods: dict[str, Path], top: str) -> list[Edge]:
    """Every import of one of ``mods`` by another, wherever in the module it is written."""

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges = []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                # ``from pkg import name``: name may be a module of pkg or a name in it.
                targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
            else:
                continue
            for target in targets:
                if target != top and not target.startswith(top + "."):
                    continue
                resolved = resolve(target)
                edge = Edge(name, resolved, path, node.lineno) if resolved else None
                if edge is not None and resolved != name and edge not in edges:
                    edges.append(edge)
    return edges


def stage_of(module: str, stages: list[list[str]]) -> int:
    best, best_len = None, -1
    for index, stage in enumerate(stages):
        for prefix in stage:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no stage of the layering: add it to the stage list")
    return best


def upward(edges: list[Edge], stages: list[list[str]]) -> list[Edge]:
    return [e for e in edges if stage_of(e.target, stages) > stage_of(e.source, stages)]


def circles(edges: list[Edge]) -> list[list[Edge]]:
    """One circle of imports per strongly connected group of modules (Tarjan), as its edges."""
    graph: dict[str, list[Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, []).append(e)
        graph.setdefault(e.target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for e in graph[v]:
            if e.target not in index:
                visit(e.target)
                low[v] = min(low[v], low[e.target])
            elif e.target in stack:
                low[v] = min(low[v], index[e.target])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)

    found = []
    for group in groups:
        # a shortest way back to the group's first module, by breadth-first search inside the group
        start = min(group)
        came: dict[str, Edge] = {}
        frontier = [start]
        while frontier and start not in came:
            nxt = []
            for v in frontier:
                for e in graph[v]:
                    if e.target in group and e.target not in came:
                        came[e.target] = e
                        nxt.append(e.target)
            frontier = nxt
        cycle, v = [], start
        while True:
            e = came[v]
            cycle.append(e)
            v = e.source
            if v == start:
                break
        found.append(cycle[::-1])
    return found


def check(src: Path, top: str, stages: list[list[str]]) -> list[str]:
    edges = import_edges(modules(src, top), top)
    problems = [f"imports a later stage: {e}" for e in upward(edges, stages)]
    problems += ["import circle: " + "; ".join(str(e) for e in cycle) for cycle in circles(edges)]
    return problems


def board_src() -> Path | None:
    return next((root for root in BOARD_ROOTS if (root / "bnnflow_board").is_dir()), None)


def test_host_layers() -> None:
    problems = check(ROOT / "src", "bnnflow", HOST_STAGES)
    assert not problems, "\n".join(problems)


def test_board_layers() -> None:
    src = board_src()
    assert src is not None, "no bnnflow_board package under host_driver/src"
    problems = check(src, "bnnflow_board", BOARD_STAGES)
    assert not problems, "\n".join(problems)


def test_the_check_sees_function_local_imports(tmp_path: Path) -> None:
    """An upward import and a circle written inside functions, as the old compile and package had them."""
    pkg = tmp_path / "pkg"
    (pkg / "low").mkdir(parents=True)
    (pkg / "high").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "high" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("def f():\n    from pkg.high.b import g\n    return g\n")
    (pkg / "high" / "b.py").write_text("import pkg.low.a\n\n\ndef g():\n    return pkg.low.a\n")
    (pkg / "low" / "c.py").write_text("def h():\n    from . import d\n")
    (pkg / "low" / "d.py").write_text("def k():\n    from pkg.low import c\n")
    problems = check(tmp_path, "pkg", [["pkg", "pkg.low"], ["pkg.high"]])
    assert any(
        p.startswith("imports a later stage: pkg.low.a -> pkg.high.b (") and ":2)" in p for p in problems
    )
    assert any(
        "import circle:" in p and "pkg.low.a -> pkg.high.b" in p and "pkg.high.b -> pkg.low.a" in p
        for p in problems
    )
    assert any("import circle:" in p and "pkg.low.c -> pkg.low.d" in p for p in problems)
    assert len(problems) == 3
