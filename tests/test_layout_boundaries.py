"""The house's import rules, read from the source with ``ast`` (every import, also those inside
functions): the core imports no product package except in the composition root; the insurer's
service imports no state package; the state's packages import nothing of the insurer's service;
the core's modules form no circle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = "olv"
SERVICE = "service"
STATE = ("portal", "bob_loader", "enforcement", "idcards")
PRODUCTS = (SERVICE, *STATE)
# The one composition root: the `olv` command (and `python -m olv`) and Alembic's env, which
# must see every package's tables. Nothing else in the core may import a product package.
COMPOSITION_ROOT = {"olv.cli", "olv.__main__", "olv.migrations.env"}


def _module_name(path: Path) -> str:
    name = path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
    return name.removesuffix(".__init__")


def _modules(package: str) -> dict[str, Path]:
    folder = ROOT / package
    if not folder.is_dir():
        return {}
    return {_module_name(path): path for path in sorted(folder.rglob("*.py"))}


def _imports(module: str, path: Path) -> Iterator[str]:
    """Every module name ``path`` imports (absolute or relative), at any depth of the code."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            yield base
            # ``from olv import db`` imports the module olv.db
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _top(name: str) -> str:
    return name.split(".")[0]


def _offenders(packages: tuple[str, ...], forbidden: tuple[str, ...], skip: set[str]) -> list:
    found = []
    for package in packages:
        for module, path in _modules(package).items():
            if module in skip:
                continue
            for name in set(_imports(module, path)):
                if _top(name) in forbidden:
                    found.append((module, name))
    return sorted(found)


def test_the_core_imports_no_product_package_outside_the_composition_root() -> None:
    assert len(_modules(CORE)) > 10
    assert _offenders((CORE,), PRODUCTS, COMPOSITION_ROOT) == []


def test_the_composition_root_is_what_imports_the_products() -> None:
    # The rule above is not vacuous: the root really wires the product packages.
    imported = {
        _top(name)
        for module in COMPOSITION_ROOT
        for name in _imports(module, _modules(CORE)[module])
    }
    assert {"service", "portal", "bob_loader"} <= imported


def test_the_insurer_service_imports_no_state_package() -> None:
    assert len(_modules(SERVICE)) > 10
    assert _offenders((SERVICE,), STATE, set()) == []


def test_the_state_packages_import_nothing_of_the_insurer_service() -> None:
    assert len(_modules("portal")) > 20 and len(_modules("bob_loader")) > 10
    assert _offenders(STATE, (SERVICE,), set()) == []


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph, or None."""
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> list[str] | None:
        if node in trail:
            return [*trail[trail.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            found = visit(target, [*trail, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def test_the_modules_of_the_core_form_no_circle() -> None:
    modules = _modules(CORE)
    graph = {
        module: {name for name in _imports(module, path) if name in modules and name != module}
        for module, path in modules.items()
    }
    # packages import their own modules' names through ``from olv import x``; a package
    # __init__ is no edge of a circle here
    graph = {m: {t for t in targets if t != CORE} for m, targets in graph.items()}
    assert _cycle(graph) is None, _cycle(graph)


def test_the_circle_finder_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
