"""The code's layers, checked from the source: no module imports a higher layer, and our
modules import each other without a cycle.

    0  schemas/, deadletter/, infra/    records, contracts, the output layout, servers
    1  transforms/                      the pipeline's steps
    2  encoders/                        models over aligned rows
    3  pipelines/                       jobs and command lines

Every ``import`` and ``from ... import`` is read with ``ast``, at module level and inside
functions alike (a lazy import is still a dependency), absolute (``mmalign.x``) or relative.
``from pkg import name`` depends on ``pkg.name`` when that is a module, else on ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "mmalign"
LAYERS = {"schemas": 0, "deadletter": 0, "infra": 0, "transforms": 1, "encoders": 2,
          "pipelines": 3}


def repo_root() -> Path:
    p = Path(__file__).resolve()
    while not (p / "pyproject.toml").is_file():
        p = p.parent
    return p


def module_files(root: Path) -> dict[str, Path]:
    """{"mmalign.transforms.io.kafka": path} for every module of the layered packages."""
    out = {}
    for top in LAYERS:
        for f in sorted((root / top).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([PACKAGE, *parts])] = f
    return out


def imported_names(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every dotted name ``source`` (the text of ``module``) imports, anywhere in the file;
    for ``from x import a`` both ``x`` and ``x.a`` (``a`` may be a module or a name)."""
    package = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            names.add(base_name)
            names.update(f"{base_name}.{a.name}" for a in node.names)
    return names


def resolve(name: str, modules) -> str | None:
    """The module of ours that importing ``name`` runs: its longest known prefix."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph(root: Path) -> dict[str, set[str]]:
    files = module_files(root)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        deps = set()
        for name in imported_names(path.read_text(), module, path.name == "__init__.py"):
            target = resolve(name, files) if name.startswith(PACKAGE + ".") else None
            if target and target != module:
                deps.add(target)
        graph[module] = deps
    return graph


def layer(module: str) -> int:
    return LAYERS[module.split(".")[1]]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a (layer i) -> b (layer j)`` for every import of a higher layer (j > i)."""
    return [f"{a} (layer {layer(a)}) -> {b} (layer {layer(b)})"
            for a, deps in sorted(graph.items()) for b in sorted(deps) if layer(b) > layer(a)]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, ()):
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(sorted(g), graph) for g in groups]


def _cycle_in(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the group's first module, staying inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph.get(v, ()) & members):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                todo.append(w)
    return group


def test_checker_finds_an_upward_import_and_a_cycle():
    """The checks can fail: a fake graph with one upward import and one cycle, and a file
    whose only mmalign imports are inside a function and relative."""
    fake = {
        "mmalign.schemas.a": {"mmalign.pipelines.b"},                  # layer 0 -> 3
        "mmalign.pipelines.b": {"mmalign.pipelines.c", "mmalign.schemas.a"},
        "mmalign.pipelines.c": {"mmalign.pipelines.b"},                # b <-> c
        "mmalign.transforms.d": {"mmalign.schemas.a"},
    }
    assert upward_imports(fake) == [
        "mmalign.schemas.a (layer 0) -> mmalign.pipelines.b (layer 3)"]
    assert cycles(fake) == [["mmalign.pipelines.b", "mmalign.pipelines.c",
                             "mmalign.pipelines.b"]]
    assert cycles({"mmalign.schemas.a": {"mmalign.schemas.b"}, "mmalign.schemas.b": set()}) == []
    source = ("import json\n"
              "def f():\n"
              "    from mmalign.pipelines import cli\n"
              "    import mmalign.encoders.stage as st\n"
              "    from ..io import kafka\n"
              "    return cli, st, kafka\n")
    names = imported_names(source, "mmalign.transforms.clock.sync")
    modules = {"mmalign.pipelines", "mmalign.pipelines.cli", "mmalign.encoders.stage",
               "mmalign.transforms.io", "mmalign.transforms.io.kafka"}
    assert {resolve(n, modules) for n in names if n.startswith("mmalign.")} == modules
    graph = {"mmalign.transforms.clock.sync": modules - {"mmalign.transforms.io",
                                                         "mmalign.transforms.io.kafka"}}
    assert upward_imports(graph) == [
        "mmalign.transforms.clock.sync (layer 1) -> mmalign.encoders.stage (layer 2)",
        "mmalign.transforms.clock.sync (layer 1) -> mmalign.pipelines (layer 3)",
        "mmalign.transforms.clock.sync (layer 1) -> mmalign.pipelines.cli (layer 3)"]


def test_no_module_imports_a_higher_layer():
    graph = import_graph(repo_root())
    assert len(graph) > 50, sorted(graph)             # the walk found the code
    bad = upward_imports(graph)
    assert not bad, "imports of a higher layer:\n  " + "\n  ".join(bad)


def test_no_import_cycle_between_our_modules():
    found = cycles(import_graph(repo_root()))
    assert not found, "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in found)
