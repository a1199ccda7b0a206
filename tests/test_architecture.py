"""The layering is true: each package imports only what its docstring's `Imports:` line allows, no module
imports itself back through others, and every module stays small enough to read in one sitting."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400
# Longer modules, each with the reason it stays whole. Keep this list empty if you can.
KNOWN_LONG: dict[str, str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for top in ("cavra_ingest", "workers") for p in sorted((ROOT / top).rglob("*.py"))}


def unit(module: str) -> str:
    """The layer a module belongs to: a package of cavra_ingest, `runtime`, or `workers`."""
    parts = module.split(".")
    if parts[0] == "workers" or len(parts) == 1:
        return parts[0]
    return parts[1]


def declared(unit_name: str) -> set[str]:
    """The units the `Imports:` line of a unit's docstring allows (the version root is open to all)."""
    path = ROOT / ("workers/__init__.py" if unit_name == "workers" else f"cavra_ingest/{unit_name}")
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    found = re.search(r"^Imports: (.*?)\.(?:\s|$)", doc, re.MULTILINE)
    assert found, f"{path.relative_to(ROOT)}: the docstring says what it may import (a line `Imports: …`)"
    allowed = set() if found.group(1).startswith("nothing") else set(re.findall(r"[a-z]+", found.group(1)))
    return allowed | {unit_name, "cavra_ingest"} if "anything" not in allowed else set(map(unit, MODULES))


def imports(path: Path, top_level_only: bool) -> set[str]:
    """Project modules a file imports at run time (imports under `if TYPE_CHECKING:` are types only)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.add(child.module)
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name in MODULES}


def test_each_package_imports_only_the_layers_its_docstring_allows() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, path in MODULES.items()
        for target in sorted(imports(path, top_level_only=False))
        if unit(target) not in declared(unit(module))
    ]
    assert not wrong, "\n".join(wrong)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle a depth-first walk of the import graph meets."""
    found: list[list[str]] = []
    state: dict[str, int] = {}

    def walk(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                found.append([*trail[trail.index(target) :], target])
            elif target not in state:
                walk(target, [*trail, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    return found


def test_no_module_imports_itself_back() -> None:
    graph = {module: imports(path, top_level_only=True) - {module} for module, path in MODULES.items()}
    # A package's __init__ importing its own submodules is how a package exports; it is not a circle.
    graph = {m: {t for t in targets if not m.startswith(f"{t}.")} for m, targets in graph.items()}
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]  # the walk finds one
    found = circles(graph)
    assert not found, "\n".join(" -> ".join(circle) for circle in found)


def test_every_module_is_short_enough_to_read_in_one_sitting() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in MODULES.values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES and str(path.relative_to(ROOT)) not in KNOWN_LONG
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [("cavra_ingest.core.models", "cavra_ingest.store.base"), ("cavra_ingest.store.base", "cavra_ingest.http.keys")],
)
def test_the_check_catches_a_forbidden_import(module: str, forbidden: str, tmp_path: Path) -> None:
    """The rule bites: a lower layer importing a higher one is named."""
    source = MODULES[module].read_text() + f"\nimport {forbidden}\n"
    planted = tmp_path / "planted.py"
    planted.write_text(source)
    assert forbidden in imports(planted, top_level_only=False)
    assert unit(forbidden) not in declared(unit(module))
