"""The package layering of docs/layout.md, checked on the source: who may import whom.

Every module under the four source roots is parsed (not imported) and every import of a
``loopwright`` module is collected: module level, inside functions, under ``TYPE_CHECKING``,
relative or absolute. Each one is an edge from the importing module's package (``runner``,
``events``…, or a top-level module such as ``keys``) to the imported one's. The edges must stay
inside ``ALLOWED``, which lists the layers bottom-up, and the graph must have no cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from loopwright.runner.ports import ServicesMissingError
from loopwright.runner.runtime import Runtime
from loopwright.settings import Settings

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("platform", "sidecar", "skills_registry", "sandbox")
FOUNDATION = {"errors", "keys", "settings", "scripts", "envmodel"}

# What each package may import besides itself, bottom-up (docs/layout.md explains each line).
ALLOWED: dict[str, set[str]] = {
    "errors": {"sdk"},  # the tree's root lives in sdk.errors (the guest imports it)
    "keys": set(),
    "settings": {"sdk", "envmodel"},  # durations read by the one parser (sdk.durations)
    "envmodel": set(),  # the settings' declaration syntax and env loader
    "scripts": set(),
    "sdk": set(),
    "supervisor": set(),
    "redis_server": {"errors", "settings"},
    "sandbox": {"sdk"},
    "runner": FOUNDATION | {"redis_server", "sdk", "sandbox"},
    "events": FOUNDATION | {"sdk", "runner"},
    "skills_registry": FOUNDATION | {"sdk"},
    "auth": FOUNDATION,
    "scheduler": FOUNDATION | {"sdk", "runner", "events", "history"},
    "sidecar": FOUNDATION | {"sdk", "sandbox", "runner", "skills_registry", "auth"},
    "llm": FOUNDATION | {"sdk", "runner", "skills_registry", "sidecar"},
    "assembly": FOUNDATION | {"runner", "events", "skills_registry", "llm"},
    "history": FOUNDATION
    | {"redis_server", "sdk", "sandbox", "runner", "events"}
    | {"skills_registry", "sidecar"},
    "service": FOUNDATION
    | {"redis_server", "sdk", "sandbox", "runner", "events", "scheduler"}
    | {"skills_registry", "sidecar", "history"},
    "agent": FOUNDATION
    | {"sdk", "sandbox", "runner", "events", "skills_registry", "sidecar", "llm", "assembly"}
    | {"auth", "history", "service"},
    "api": FOUNDATION
    | {"sdk", "sandbox", "runner", "events", "skills_registry", "sidecar", "llm", "assembly"}
    | {"auth", "history", "service", "agent", "review"},
    "review": FOUNDATION
    | {"sdk", "sandbox", "runner", "events", "skills_registry", "sidecar", "llm", "assembly"}
    | {"auth", "history", "service"},
    "cli": FOUNDATION
    | {"redis_server", "supervisor", "sdk", "sandbox", "runner", "events", "scheduler"}
    | {"skills_registry", "sidecar", "llm", "agent", "assembly", "auth", "history", "service"}
    | {"api", "review"},
    # Test doubles may use anything; nothing above may use them (see the test below).
    "testing": set(),
}
# The inbox (issue 15) imports only the foundation, so every layer above it may post notices.
ALLOWED["inbox"] = set(FOUNDATION)
for _above_inbox in ("runner", "events", "skills_registry", "auth", "scheduler", "sidecar"):
    ALLOWED[_above_inbox] |= {"inbox"}
for _above_inbox in ("llm", "assembly", "history", "service", "agent", "review", "api", "cli"):
    ALLOWED[_above_inbox] |= {"inbox"}
ALLOWED["testing"] = set(ALLOWED) - {"testing"}


@dataclass(frozen=True, slots=True)
class Edge:
    """One import: ``importer`` (a module) imports ``imported`` (a module) at ``line``."""

    importer: str
    imported: str
    line: int

    def packages(self) -> tuple[str, str]:
        return package_of(self.importer), package_of(self.imported)

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} (line {self.line})"


def package_of(module: str) -> str:
    """``loopwright.runner.store`` -> ``runner``; ``loopwright.keys`` -> ``keys``."""
    return module.split(".")[1]


@cache
def source_modules() -> dict[str, Path]:
    """Every module of the four source roots by dotted name (packages by their own name)."""
    found: dict[str, Path] = {}
    for root in ROOTS:
        for path in sorted((REPO / root / "loopwright").rglob("*.py")):
            parts = list(path.relative_to(REPO / root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may refer to (a module or a name inside one)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def edges_of(module: str, source: str, known: set[str] | dict[str, Path]) -> list[Edge]:
    """The imports in ``source`` (module ``module``) of the ``known`` modules."""
    is_package = module in {m.rpartition(".")[0] for m in known}
    edges = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in _targets(node, module, is_package):
                if name in known and name != module:
                    edges.append(Edge(module, name, node.lineno))
    return edges


@cache
def import_edges() -> tuple[Edge, ...]:
    """Every import of a ``loopwright`` module, wherever it stands in the file (parsed once)."""
    modules = source_modules()
    return tuple(
        edge
        for module, path in modules.items()
        for edge in edges_of(module, path.read_text(encoding="utf-8"), modules)
    )


def package_graph(edges: tuple[Edge, ...]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        src, dst = edge.packages()
        if src != dst:
            graph[src].add(dst)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_parser_sees_imports_wherever_they_stand() -> None:
    # Given a module importing at module level, inside a function, under TYPE_CHECKING and
    # relatively
    known = {"loopwright.x", "loopwright.x.a", "loopwright.y", "loopwright.z", "loopwright.w"}
    source = """
from typing import TYPE_CHECKING
import loopwright.y
from . import a
if TYPE_CHECKING:
    from loopwright.z import Thing
def f():
    from loopwright import w
"""
    # When its edges are read
    edges = edges_of("loopwright.x.b", source, known)
    # Then every one of them is found ("from . import a" runs the package's __init__ too)
    found = {e.imported for e in edges}
    assert found == {
        "loopwright.y",
        "loopwright.x",
        "loopwright.x.a",
        "loopwright.z",
        "loopwright.w",
    }


def test_the_parser_finds_the_assembly_s_lazy_imports() -> None:
    lazy = {e.imported for e in import_edges() if e.importer == "loopwright.assembly"}
    assert lazy >= {"loopwright.events.bus", "loopwright.llm.skill_calls"}
    assert "loopwright.skills_registry.store" in lazy


def test_every_package_has_a_place_in_the_layers() -> None:
    packages = {package_of(m) for m in source_modules()}
    assert packages <= set(ALLOWED), f"new packages without a layer: {packages - set(ALLOWED)}"


def test_packages_import_only_the_layers_below_them() -> None:
    wrong = [
        str(e)
        for e in import_edges()
        if e.packages()[0] != e.packages()[1] and e.packages()[1] not in ALLOWED[e.packages()[0]]
    ]
    assert not wrong, "imports against docs/layout.md:\n" + "\n".join(wrong)


def test_the_package_graph_has_no_cycle() -> None:
    assert cycles(package_graph(import_edges())) == []


def test_the_allowed_layers_themselves_have_no_cycle() -> None:
    # A cycle in the rules would let one creep back in without failing the test above.
    assert cycles({pkg: set(deps) for pkg, deps in ALLOWED.items() if pkg != "testing"}) == []


def test_no_product_module_imports_the_test_doubles() -> None:
    leaks = [str(e) for e in import_edges() if e.packages()[1:] == ("testing",) != e.packages()[:1]]
    assert not leaks, "product code imports loopwright.testing:\n" + "\n".join(leaks)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_a_runtime_without_services_names_what_is_missing() -> None:
    # Given a runtime built without the platform services (no Redis is contacted)
    rt = Runtime(Settings(redis_url="redis://127.0.0.1:1/0"))
    try:
        # When a skill would send an event or call a model, Then the error says what to do
        with pytest.raises(ServicesMissingError, match=r"sending events .*build_runtime"):
            _ = rt.bus
        with pytest.raises(ServicesMissingError, match=r"ctx.step.llm"):
            rt.llm_complete("hello")
        with pytest.raises(ServicesMissingError, match="registering a skill file"):
            rt.sources.put("x = 1\n", "x")
    finally:
        rt.close()
