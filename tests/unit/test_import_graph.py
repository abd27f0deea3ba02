"""The modules of llmscope import each other one way: no circle of imports, and no module imports a layer above its
own (read from the source with ast, lazy imports inside functions included, `if TYPE_CHECKING:` left out)."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers.paths import PACKAGE


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The llmscope modules a module imports when it runs (module-level or inside functions)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for guard in ast.walk(tree)
                   if isinstance(guard, ast.If) and "TYPE_CHECKING" in ast.unparse(guard.test)
                   for statement in guard.body for node in ast.walk(statement)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("llmscope"):
                found.add(target)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), and modules that import themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for other in graph[name]:
            if other not in index:
                visit(other)
                low[name] = min(low[name], low[other])
            elif other in stack:
                low[name] = min(low[name], index[other])
        if low[name] == index[name]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == name:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for name in graph:
        if name not in index:
            visit(name)
    return found


# The layers, top to bottom (README "Layout"): a module may import its own layer and any layer below, never above.
LAYERS = (
    ("llmscope.entry", "llmscope.__main__", "llmscope.cli", "llmscope.commands"),
    ("llmscope.render",),
    ("llmscope.server", "llmscope.client"),
    ("llmscope.generation", "llmscope.inspection", "llmscope.attention", "llmscope.attribution", "llmscope.bench",
     "llmscope.architecture", "llmscope.system", "llmscope.patching", "llmscope.invariance", "llmscope.whatif"),
    ("llmscope.loading", "llmscope.invariance.kernels", "llmscope.invariance.selftest"),
    ("llmscope.core", "llmscope"),
)


def layer_of(module: str) -> int:
    """The rank of a module's package (0 = top), by the longest entry of LAYERS that holds it (invariance.kernels and
    .selftest sit below the rest of invariance); the package's own __init__ (`llmscope`) sits at the bottom."""
    if module == "llmscope":
        return len(LAYERS) - 1
    holders = [(len(package), rank) for rank, packages in enumerate(LAYERS) for package in packages
               if package != "llmscope" and (module == package or module.startswith(package + "."))]
    if not holders:
        raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS")
    return max(holders)[1]


def test_the_circle_finder_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_llmscope_module_imports_itself_through_others() -> None:
    modules = module_names()
    graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
    assert "llmscope.core.errors" in graph and not graph["llmscope.core.errors"]  # the bottom: everyone may import it
    assert circles(graph) == []


def test_every_module_sits_in_a_package_of_one_layer() -> None:
    loose = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "entry.py"]  # everything else lives in a package
    for package in PACKAGE.rglob("__init__.py"):
        assert package.read_text().startswith('"""'), f"{package} has no docstring saying what it holds"
    for name in module_names():
        layer_of(name)


def test_no_module_imports_a_layer_above_its_own() -> None:
    modules = module_names()
    upward = sorted(f"{name} -> {other}" for name, path in modules.items()
                    for other in imports_of(path, modules) if layer_of(other) < layer_of(name))
    assert upward == []


def test_the_layer_check_sees_an_upward_import() -> None:
    assert layer_of("llmscope.loading.loader") > layer_of("llmscope.render.tokens") > layer_of("llmscope.cli.kit")
    assert layer_of("llmscope.core.errors") == layer_of("llmscope")
    assert layer_of("llmscope.invariance.check") < layer_of("llmscope.invariance.kernels") == layer_of(
        "llmscope.loading.loader")
