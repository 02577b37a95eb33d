"""No import cycles inside granite_tuner.

Every import counts: module level, under ``TYPE_CHECKING`` and inside functions, because a
cycle hidden behind any of them still ties the two modules together for a reader and for
refactors. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
``pkg``; ``import a.b.c`` is an edge to ``a.b.c`` only (the implicit import of the parent
packages is not counted, or every package re-exporting its submodules would be a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import granite_tuner

PACKAGE_ROOT = Path(granite_tuner.__file__).parent
PACKAGE = "granite_tuner"


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    modules = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        parts = [PACKAGE, *path.relative_to(PACKAGE_ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in modules else base)
    owners = (_owning_module(target, modules) for target in targets)
    return {owner for owner in owners if owner is not None}


def _owning_module(name: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted import name refers to (``pkg.mod.attr`` -> ``pkg.mod``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: _imported(module, path, modules) for module, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, plus self-imports (Tarjan)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                lowlink[node] = min(lowlink[node], lowlink[target])
            elif target in on_stack:
                lowlink[node] = min(lowlink[node], index[target])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_checker_finds_cycles_and_self_imports() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert cycles(graph) == [["a", "b", "c"], ["d"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_type_checking_and_function_level_imports() -> None:
    graph = import_graph()
    # runs imports _plotting inside plot_learning_curve; cli/__init__ imports _app in a function.
    assert "granite_tuner._plotting" in graph["granite_tuner.runs"]
    assert "granite_tuner.cli._app" in graph["granite_tuner.cli"]
    # `from granite_tuner.cli import _tuning` is an edge to the module, not to the package.
    assert "granite_tuner.cli._tuning" in graph["granite_tuner.cli._app"]


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    listing = "\n".join(" <-> ".join(component) for component in found)
    assert not found, f"Import cycles in src/granite_tuner:\n{listing}"


def _layer(module: str) -> str:
    """The layer of docs/architecture.md a module belongs to."""
    parts = module.split(".")
    if len(parts) == 1:
        return "root"  # the package itself re-exports the public names of every layer
    if parts[1:3] in (["backends", "local"], ["backends", "watsonx"]):
        return ".".join(parts[1:3])
    if parts[1] in ("cli", "server", "testing", "evaluator", "tuner", "deployment"):
        return parts[1]
    return "core"  # errors, runs, data, backends.base, the private helpers, ...


#: Layer -> the layers it must never import (docs/architecture.md, "Packages and modules").
#: Besides these, only the CLI imports the CLI, and only the fake imports the fake (but for
#: `granite-tuner fake-server`, which starts it through the public `granite_tuner.testing`).
_FORBIDDEN = {
    "core": {"backends.local", "backends.watsonx", "tuner", "deployment", "evaluator", "server"},
    "backends.watsonx": {"backends.local", "tuner", "deployment", "evaluator", "server"},
    "backends.local": {"backends.watsonx", "tuner", "deployment", "evaluator", "server"},
    "tuner": {"backends.local", "backends.watsonx", "deployment", "evaluator", "server"},
    "deployment": {"backends.local", "backends.watsonx", "tuner", "evaluator", "server"},
    "evaluator": {"backends.local", "backends.watsonx", "tuner", "deployment", "server"},
}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes against the layers, as "importer -> imported"."""
    wrong = []
    for module, targets in graph.items():
        here = _layer(module)
        if here == "root":
            continue
        for target in targets:
            there = _layer(target)
            forbidden = there in _FORBIDDEN.get(here, set())
            private = there in ("cli", "testing") and there != here
            # `granite-tuner fake-server` starts the fake through its public package.
            if here == "cli" and target == "granite_tuner.testing":
                private = False
            if forbidden or private:
                wrong.append(f"{module} -> {target}")
    return sorted(wrong)


def test_the_layer_check_finds_wrong_imports() -> None:
    graph = {
        "granite_tuner": {"granite_tuner.backends.local"},  # the root may re-export anything
        "granite_tuner.tuner": {"granite_tuner.backends.base", "granite_tuner.backends.local"},
        "granite_tuner.runs": {"granite_tuner.testing._fake"},
        "granite_tuner.cli._app": {"granite_tuner.backends.watsonx.client", "granite_tuner.tuner"},
        "granite_tuner.backends.local._serving": {"granite_tuner.backends.watsonx._transport"},
    }
    assert layer_violations(graph) == [
        "granite_tuner.backends.local._serving -> granite_tuner.backends.watsonx._transport",
        "granite_tuner.runs -> granite_tuner.testing._fake",
        "granite_tuner.tuner -> granite_tuner.backends.local",
    ]


def test_layers_import_only_downwards() -> None:
    wrong = layer_violations(import_graph())
    assert not wrong, "Imports against docs/architecture.md:\n" + "\n".join(wrong)
