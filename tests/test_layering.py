"""The house's layering, read from the modules' own imports (docs/architecture.md).

Every module of src/dllreg belongs to one layer. An import, at module level, inside a function or
for type checking only, stays inside its own subpackage or goes down to a lower layer, never up or
sideways, and no chain of imports that run returns to where it started. Importing ``dllreg.x.y``
also runs ``dllreg/x/__init__.py``, so the packages on the way count as imported too.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

#: Top first. A layer may import only the layers after it (and its own subpackage).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("dllreg.__main__",),
    ("dllreg.cli",),
    ("dllreg.convert",),
    ("dllreg.build",),
    ("dllreg.env",),
    ("dllreg.stub",),  # above recipes: the renderer writes their PyPI wheel layouts into stubs
    ("dllreg.recipes",),
    ("dllreg.libwheel",),
    ("dllreg.binary",),
    ("dllreg", "dllreg.names", "dllreg.errors", "dllreg.wheelfile"),  # the ground floor
)
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
#: The runtime template, pasted into every consumer: it may import only its own pieces.
TEMPLATE = {"dllreg.stub._runtime", "dllreg.stub._vmatch", "dllreg.stub._errors"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _typing_only(tree: ast.Module) -> set[int]:
    """Line numbers of ``if TYPE_CHECKING:`` blocks: their imports never run."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(path: Path, modules: set[str]) -> tuple[set[str], set[str]]:
    """The dllreg modules ``path`` imports anywhere in the file: (all, those that run)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = _typing_only(tree)
    found: dict[str, bool] = {}  # module -> imported by code that runs
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            # ``from P import m`` imports the module P.m when there is one
            names = [f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in modules else base_name
                     for a in node.names]
        for m in names:
            found[m] = found.get(m, False) or node.lineno not in typing_only
    dllreg = {m: runs for m, runs in found.items() if m == "dllreg" or m.startswith("dllreg.")}
    unknown = set(dllreg) - modules
    assert not unknown, f"{name} imports modules that do not exist: {sorted(unknown)}"
    # the packages on the way (dllreg.x for dllreg.x.y), except the importer's own
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)} | {package}
    for m, runs in list(dllreg.items()):
        parts = m.split(".")
        for p in (".".join(parts[:i]) for i in range(1, len(parts))):
            if p not in own:
                dllreg[p] = dllreg.get(p, False) or runs
    dllreg.pop(name, None)
    return set(dllreg), {m for m, runs in dllreg.items() if runs}


def unit(module: str) -> str:
    """The layer unit of a module: its subpackage, or the ground-floor module itself."""
    if module in RANK:
        return module
    parts = module.split(".")
    head = ".".join(parts[:2])
    if head in RANK:
        return head
    raise AssertionError(f"{module} is in no layer: put it in a subpackage of LAYERS "
                         "(tests/test_layering.py, docs/architecture.md)")


def violations(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Imports that go up or sideways between units."""
    bad = []
    for a, targets in graph.items():
        for b in targets:
            ua, ub = unit(a), unit(b)
            if ua == ub or RANK[ub] > RANK[ua]:
                continue
            if RANK[ua] == RANK[ub] == RANK["dllreg"]:  # the ground floor among itself
                continue
            bad.append(f"{a} -> {b} ({'up' if RANK[ub] < RANK[ua] else 'sideways'})")
    return sorted(bad)


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def the_graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """module -> the modules it imports: (all imports, imports that run)."""
    paths = sorted((SRC / "dllreg").rglob("*.py"))
    modules = {module_name(p) for p in paths}
    found = {module_name(p): imports(p, modules) for p in paths}
    return {m: a for m, (a, _) in found.items()}, {m: r for m, (_, r) in found.items()}


def test_every_module_is_in_a_layer_and_imports_go_down() -> None:
    graph, _ = the_graphs()
    for m in graph:
        unit(m)
    assert violations(graph) == []
    # the reader sees the imports (a broken reader would find none and pass)
    assert "dllreg.env.registry" in graph["dllreg.cli.main"]
    assert {"dllreg.build.consumer", "dllreg.build"} <= graph["dllreg.convert.write"]
    assert sum(len(t) for t in graph.values()) > 100


def test_no_import_cycles() -> None:
    assert cycles(the_graphs()[1]) == []


def test_the_stub_template_imports_only_itself() -> None:
    graph, _ = the_graphs()
    assert {m: graph[m] - TEMPLATE for m in TEMPLATE} == {m: set() for m in TEMPLATE}
    assert graph["dllreg.stub._runtime"] == {"dllreg.stub._errors", "dllreg.stub._vmatch"}


def test_the_checks_catch_what_they_look_for() -> None:
    assert violations({"dllreg.libwheel.package": {"dllreg.env.registry"},
                       "dllreg.binary.elf": {"dllreg.names", "dllreg.wheelfile"},
                       "dllreg.env.check": {"dllreg.env.registry", "dllreg.binary"},
                       "dllreg.build.consumer": {"dllreg.convert.write"},
                       "dllreg.cli.main": {"dllreg.convert.plan", "dllreg.names"}}) == [
        "dllreg.build.consumer -> dllreg.convert.write (up)",
        "dllreg.libwheel.package -> dllreg.env.registry (up)"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    with pytest.raises(AssertionError, match=r"dllreg\.tools\.x is in no layer"):
        unit("dllreg.tools.x")


def test_public_names_keep_working() -> None:
    backend = importlib.import_module("dllreg.build")  # build-backend = "dllreg.build"
    for hook in ("build_wheel", "build_sdist", "build_editable", "get_requires_for_build_wheel",
                 "get_requires_for_build_sdist", "get_requires_for_build_editable"):
        assert callable(getattr(backend, hook)), hook
    stub = importlib.import_module("dllreg.stub")
    assert callable(stub.render_stub) and stub.STUB_FILE == "_dlls.py"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    module, _, attr = project["scripts"]["dllreg"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    hatch = project["entry-points"]["hatch"]["dllreg"]
    assert (SRC / Path(*hatch.split("."))).with_suffix(".py").is_file()  # hatchling may be absent
    assert importlib.import_module("dllreg.__main__").run is getattr(importlib.import_module(module), attr)
