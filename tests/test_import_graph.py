"""The packages import one another only along the arrows of the design, in the open.

`modelcontract` and `features` import no package of the project; `serving` imports
`features` and `modelcontract`; `training` may import all three (its retrain job refreshes
serving's online store; a backtest replays serving's decision). Serving never imports
training. Read from the source (every import statement, in functions too), so an arrow
cannot hide in a lazy import, and none may sit behind `except ImportError`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What each package may import of the project (besides itself).
ALLOWED = {
    "modelcontract": set(),
    "features": set(),
    "serving": {"features", "modelcontract"},
    "training": {"features", "modelcontract", "serving"},
}


def imported_packages(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def guarded_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """Imports of the project inside a `try` that catches ImportError or ModuleNotFoundError."""
    guarded = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = {
            name.id
            for handler in node.handlers
            if handler.type is not None
            for name in ast.walk(handler.type)
            if isinstance(name, ast.Name)
        }
        if caught & {"ImportError", "ModuleNotFoundError"}:
            body = ast.Module(body=node.body, type_ignores=[])
            guarded += [(line, p) for line, p in imported_packages(body) if p in ALLOWED]
    return guarded


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_every_package_is_seen() -> None:
    for package in ALLOWED:
        assert modules(package), package
    assert {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} - {"tests"} == set(
        ALLOWED
    ), "a new top-level package needs its arrows here"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_arrows(package: str) -> None:
    wrong = []
    for path in modules(package):
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, imported in imported_packages(tree):
            if imported in ALLOWED and imported != package and imported not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert not wrong, "forbidden arrows: " + "; ".join(wrong)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_of_the_project_hides_behind_except_import_error(package: str) -> None:
    hidden = [
        f"{path.relative_to(ROOT)}:{line} imports {imported}"
        for path in modules(package)
        for line, imported in guarded_imports(ast.parse(path.read_text()))
    ]
    assert not hidden, "one distribution: these imports cannot fail; " + "; ".join(hidden)


def test_the_checks_catch_what_they_are_for() -> None:
    source = (
        "def refresh():\n"
        "    try:\n"
        "        from serving.materialize import materialize\n"
        "    except ImportError:\n"
        "        return\n"
        "import training.train\n"
    )
    tree = ast.parse(source)
    assert sorted(imported_packages(tree)) == [(3, "serving"), (6, "training")]
    assert guarded_imports(tree) == [(3, "serving")]
