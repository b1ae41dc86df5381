"""The house rules that no linter checks by itself: no import cycle between the project's
modules, no module over 600 lines, and the composition root typed without ``Any``.

The import graph comes from grimp (what import-linter uses); imports under
``if TYPE_CHECKING:`` are left out because they never run.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data", "recsys", "genservice", "api")
MAX_LINES = 600


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
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
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_tarjan_finds_a_known_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(edges) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle(graph: grimp.ImportGraph) -> None:
    # A package's __init__ re-exporting its own submodules is not a cycle between modules of
    # different responsibilities: edges from a package to its own descendants are left out.
    modules = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    edges = {
        m: {
            t
            for t in graph.find_modules_directly_imported_by(m)
            if t in modules and not t.startswith(m + ".")
        }
        for m in modules
    }
    assert _cycles(edges) == []


def test_no_module_over_600_lines() -> None:
    too_long = {
        str(p.relative_to(ROOT)): n
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert too_long == {}


def test_components_are_frozen_and_typed_without_any() -> None:
    from api.composition import Components

    assert dataclasses.is_dataclass(Components)
    assert Components.__dataclass_params__.frozen  # type: ignore[attr-defined]
    hints = typing.get_type_hints(Components)
    with_any = [name for name, hint in hints.items() if "Any" in repr(hint)]
    assert with_any == []


def _is_serving(module: str) -> bool:
    """Code that runs in ``tailorshot serve`` / ``worker``: everything but the CLI, training,
    offline evaluation and the demo world."""
    top = module.split(".")[0]
    if top not in ("api", "genservice", "recsys"):
        return False
    offline = ("api.cli", "genservice.training", "recsys.training", "recsys.evaluation")
    return not any(module == o or module.startswith(o + ".") for o in offline)


def test_serving_code_never_reaches_training_or_demo_code(graph: grimp.ImportGraph) -> None:
    forbidden = ("genservice.training", "recsys.training", "data.demo", "api.cli")
    reached = {
        m: sorted(
            t
            for t in graph.find_upstream_modules(m)
            if any(t == f or t.startswith(f + ".") for f in forbidden)
        )
        for m in graph.modules
        if _is_serving(m)
    }
    assert {m: ts for m, ts in reached.items() if ts} == {}
