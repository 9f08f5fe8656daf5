"""No import cycles among ``pipeline`` modules, counting imports inside functions, nor among its packages.

A function-level import hides a cycle from Python's import machinery but not from the
reader: two modules that import each other are one module split in two. Leaves (schemas,
registries, the console) go below every layer that needs them. The same holds a level up:
two packages that import each other (distill's trainer reading QAT's fusion pairs while QAT
imports distill's KD) cannot be read, tested or replaced one without the other, so what both
need goes below both.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "pipeline"


def _module_files() -> dict[str, Path]:
    """``pipeline.x.y`` -> its file; a package ``pipeline.x`` is its ``__init__.py``."""
    modules = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a ``pipeline`` module (``pipeline.x.Class`` -> ``pipeline.x``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every ``pipeline`` module this file imports, anywhere in it (top level, functions, try blocks)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(_resolve(alias.name, modules))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in modules else _resolve(source, modules))
    found.discard(None)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _module_files()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of one module are left out (no self-edges are kept)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def package_of(module: str) -> str:
    """The top-level package under ``pipeline`` a module belongs to (``pipeline.export.stage`` ->
    ``pipeline.export``); a module directly under ``pipeline`` is its own unit."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """``graph`` with every module collapsed to its package; imports within a package are left out."""
    packages: dict[str, set[str]] = {}
    for module, deps in graph.items():
        here = package_of(module)
        packages.setdefault(here, set()).update(package_of(d) for d in deps if package_of(d) != here)
    return packages


def _cycle_edges(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    members = set(component)
    return [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    """The walker itself: a cycle through an import inside a function, and a relative import, are both found."""
    global PACKAGE_ROOT
    package = tmp_path / "pipeline"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pipeline.sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("from .. import a\nfrom . import c\n")
    (package / "sub" / "c.py").write_text("from pipeline.sub import thing\n")
    saved, PACKAGE_ROOT = PACKAGE_ROOT, package
    try:
        graph = import_graph()
    finally:
        PACKAGE_ROOT = saved
    assert graph["pipeline.a"] == {"pipeline.sub.b"}
    assert graph["pipeline.sub.b"] == {"pipeline.a", "pipeline.sub.c"}
    assert graph["pipeline.sub.c"] == {"pipeline.sub"}  # a name in the package: an edge to its __init__
    assert strongly_connected(graph) == [["pipeline.a", "pipeline.sub.b"]]


def test_packages_that_import_each_other_form_a_cycle_without_any_module_cycle():
    """Two packages, no module importing one that imports it back: still one package cycle."""
    graph = {"pipeline.distill.trainer": {"pipeline.qat.fake_quant"}, "pipeline.qat.fake_quant": set(),
             "pipeline.qat.stage": {"pipeline.distill.kd"}, "pipeline.distill.kd": {"pipeline.distill.base"},
             "pipeline.distill.base": set(), "pipeline.errors": set()}
    assert strongly_connected(graph) == []
    assert package_graph(graph) == {"pipeline.distill": {"pipeline.qat"}, "pipeline.qat": {"pipeline.distill"},
                                    "pipeline.errors": set()}
    assert strongly_connected(package_graph(graph)) == [["pipeline.distill", "pipeline.qat"]]


def test_no_import_cycles_among_pipeline_modules():
    graph = import_graph()
    cycles = strongly_connected(graph)
    listing = "\n".join(f"  {' <-> '.join(c)}\n    " + "\n    ".join(_cycle_edges(c, graph)) for c in cycles)
    assert not cycles, f"{len(cycles)} import cycle(s) among pipeline modules:\n{listing}"


def test_no_import_cycles_among_pipeline_packages():
    graph = import_graph()
    cycles = strongly_connected(package_graph(graph))
    listing = []
    for component in cycles:
        members = set(component)
        crossing = [f"{m} -> {d}" for m in sorted(graph) if package_of(m) in members
                    for d in sorted(graph[m]) if package_of(d) in members and package_of(d) != package_of(m)]
        listing.append(f"  {' <-> '.join(component)}\n    " + "\n    ".join(crossing))
    assert not cycles, f"{len(cycles)} import cycle(s) among pipeline packages:\n" + "\n".join(listing)
