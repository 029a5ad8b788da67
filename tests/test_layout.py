"""The package's shape, read from the source with ``ast``: imports point one way, no package
reaches into another's private modules, and modules and functions stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "icbpl"

# The packages each package may import (docs/DESIGN.md draws this picture); the top-level
# modules (``icbpl``, ``icbpl.__main__``) sit above them all.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "util": set(),
    "data": {"util"},
    "encoders": {"util"},
    "features": {"data", "util"},
    "peers": {"core", "util"},
    "model": {"core", "peers", "util"},
    "deep": {"core", "encoders", "features", "util"},
    "report": {"core", "data", "util"},
    "pipeline": {"core", "data", "deep", "encoders", "features", "model", "util"},
    "cli": {"core", "data", "deep", "encoders", "features", "model", "pipeline", "report", "util"},
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every icbpl module or name ``path`` imports, anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("icbpl")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "icbpl" or node.module.startswith("icbpl."):
                found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}:{node.lineno}: a relative import")
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def _package(module: str) -> str | None:
    """The top-level sub-package of a dotted icbpl name (``None`` for ``icbpl`` itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else None


def test_the_sources_are_found() -> None:
    assert len(MODULES) > 50 and (PACKAGE / "core" / "pedcc.py") in MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_imports_point_one_way(path: Path) -> None:
    """Each package imports only the packages below it; ``icbpl.core`` imports none."""
    here = _package(_module_name(path))
    if here is None:
        return
    wrong = []
    for line, name in _imports(path):
        there = _package(name)
        if there is not None and there != here and there not in ALLOWED[here]:
            wrong.append(f"{path.relative_to(SRC)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_no_import_of_another_packages_private_module(path: Path) -> None:
    here = _package(_module_name(path))
    wrong = []
    for line, name in _imports(path):
        private = [p for p in name.split(".")[1:] if p.startswith("_") and not p.startswith("__")]
        if private and _package(name) != here:
            wrong.append(f"{path.relative_to(SRC)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


# Still too long; each entry must still be needed (test_the_exceptions_are_still_needed).
KNOWN_LONG: dict[str, set[str]] = {}


def _too_long(path: Path) -> set[str]:
    """``"module"`` when ``path`` has over 400 lines, and the names of its functions over 80."""
    text = path.read_text(encoding="utf-8")
    found = {"module"} if text.count("\n") > MAX_MODULE_LINES else set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno:
            if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                found.add(node.name)
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_modules_and_functions_are_short(path: Path) -> None:
    """No module over 400 lines, no function over 80 (docstring included)."""
    name = _module_name(path)
    assert not _too_long(path) - KNOWN_LONG.get(name, set()), name


def test_the_exceptions_are_still_needed() -> None:
    for name, known in KNOWN_LONG.items():
        path = SRC / (name.replace(".", "/") + ".py")
        assert known <= _too_long(path), f"{name}: {known - _too_long(path)} is short now"


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    """The import reader sees imports inside functions, so a lazy import cannot slip through."""
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from icbpl.peers._scan import fit_scan\n    import icbpl.cli\n"
    )
    assert _imports(module) == [(2, "icbpl.peers._scan.fit_scan"), (3, "icbpl.cli")]
    assert _package("icbpl.peers._scan.fit_scan") == "peers" and _package("icbpl.ICBPL") is None
