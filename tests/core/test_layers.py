"""Layers point down (docs/architecture.md): each part of the package imports only what lies below it.

Read from the source (every `import` and `from … import`, at any depth, type-only ones included), so a new import
that crosses a layer fails here rather than in a review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import turnkeep

PACKAGE = Path(turnkeep.__file__).parent

# What each part may import of turnkeep besides itself. A name ending in "." allows the whole package below it.
ALLOWED: dict[str, tuple[str, ...]] = {
    "core": ("turnkeep.errors",),
    "store": (
        "turnkeep.errors",
        "turnkeep.core.records",
        "turnkeep.core.writes",
        "turnkeep.core.values",
        "turnkeep.core.messages",
    ),
    "emulator": (
        "turnkeep.errors",
        "turnkeep.serving",
        "turnkeep.core.catalog",
        "turnkeep.core.pricing",
        "turnkeep.core.values",
        "turnkeep.core.messages",
    ),
    "serving.py": ("turnkeep.errors",),
    "errors.py": (),
}
ENTRY_POINTS = {"__main__.py"}  # `python -m turnkeep.emulator` runs the CLI: an entry point, not a layer


def imported_modules(path: Path) -> set[str]:
    """The turnkeep modules `path` imports (`from turnkeep.core import values` counts as `turnkeep.core.values`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "turnkeep" or name.startswith("turnkeep.")}


def _part_files(part: str) -> list[Path]:
    root = PACKAGE / part
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    return [path for path in files if path.name not in ENTRY_POINTS]


def _allowed(name: str, own: str, allowed: tuple[str, ...]) -> bool:
    if name == own or name.startswith(own + "."):
        return True
    # A package imported for one of its allowed modules (`from turnkeep.core import values`) is that module.
    return any(name == rule or name.startswith(rule + ".") or rule.startswith(name + ".") for rule in allowed)


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_lies_below_it(part: str) -> None:
    own = "turnkeep." + part.removesuffix(".py")
    crossing = {
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in _part_files(part)
        for name in imported_modules(path)
        if not _allowed(name, own, ALLOWED[part])
    }
    assert not crossing, sorted(crossing)


def test_a_crossing_import_is_caught(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text("from turnkeep.core import values\nfrom turnkeep.session import ConversationCore\n")
    names = imported_modules(source)
    assert "turnkeep.core.values" in names
    assert not _allowed("turnkeep.session", "turnkeep.store", ALLOWED["store"])
    assert not _allowed("turnkeep.session.ConversationCore", "turnkeep.store", ALLOWED["store"])
    assert _allowed("turnkeep.core", "turnkeep.store", ALLOWED["store"])  # the package, for an allowed module


def test_nothing_below_the_cli_imports_it() -> None:
    below = [path for path in sorted(PACKAGE.rglob("*.py")) if "cli" not in path.relative_to(PACKAGE).parts]
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in below
        if path.name not in ENTRY_POINTS
        and any(name.split(".")[:2] == ["turnkeep", "cli"] for name in imported_modules(path))
    ]
    assert not offenders
