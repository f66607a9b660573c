"""consults is the lower domain: no module of webapp/consults imports rooms, video or notes.

Those domains build on consults; where consults needs something of theirs it asks through
webapp/consults/hooks.py, which the app factory fills. The scan reads the source (ast), so a
lazy import inside a function counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSULTS = ROOT / "webapp" / "consults"
ABOVE = ("webapp.rooms", "webapp.video", "webapp.notes")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module a source file imports (relative imports resolved; `from x import y` gives x and x.y)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(str(node.args[0].value))
    return found


def _upward(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == above or m.startswith(above + ".") for above in ABOVE)}


def test_consults_modules_do_not_import_rooms_video_or_notes():
    files = sorted(CONSULTS.rglob("*.py"))
    assert len(files) >= 5  # the package is really there
    offenders = {}
    for path in files:
        modules = imported_modules(path.read_text(encoding="utf-8"), _module_name(path),
                                   is_package=path.name == "__init__.py")
        if _upward(modules):
            offenders[str(path.relative_to(ROOT))] = sorted(_upward(modules))
    assert offenders == {}, f"consults imports the domains above it: {offenders}"


@pytest.mark.parametrize("source", [
    "from ..rooms import services as room_services",
    "from ..video.services import calls_of",
    "from .. import notes",
    "def f():\n    from ..notes.services import text_of\n",
    "import webapp.rooms.services",
    "from webapp.video import events",
    "import importlib\nimportlib.import_module('webapp.notes.services')",
])
def test_the_scan_sees_every_form_of_import(source):
    assert _upward(imported_modules(source, "webapp.consults.routes"))


@pytest.mark.parametrize("source", [
    "from . import hooks, policy",
    "from ..scheduling import services",
    "from ..notifications.services import notify",
    "from .notes_form import X",  # a consults module that happens to be called so
])
def test_the_scan_lets_lower_and_own_imports_through(source):
    assert not _upward(imported_modules(source, "webapp.consults.routes"))
