"""The design card's rooms: imports run server -> engine -> kernels, and no module imports itself back
through others. Every import statement counts, those inside functions too: an import moved into a function
hides a circle from Python but not from the design."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hearth"
ROOMS = ("kernels", "engine", "server")  # each may import only the rooms before it


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def hearth_imports(path: Path, modules: set[str]) -> set[str]:
    """The hearth modules `path` imports anywhere in it. `from package import name` counts the submodule
    when `name` is one, else the package."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: hearth_imports(path, set(modules)) - {name} for name, path in modules.items()}


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else None


def test_rooms_import_one_way(graph):
    upward = [f"{module} imports {target}" for module, targets in graph.items() for target in targets
              if room(module) and room(target) and ROOMS.index(room(target)) > ROOMS.index(room(module))]
    assert not upward


def test_kernels_import_nothing_of_hearth_outside_kernels(graph):
    outside = [f"{module} imports {target}" for module, targets in graph.items() if room(module) == "kernels"
               for target in targets if room(target) != "kernels" and target != "hearth"]
    assert not outside


def test_no_module_imports_itself_back(graph):
    """A depth-first search for a back edge; reports the first circle found, as a path."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (circle := visit(module)):
            pytest.fail(" -> ".join(circle))
