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


def test_the_consult_page_still_gets_the_room_and_the_calls_through_the_hooks(app, make):
    """What rooms and video add to the consult page arrives through consults.hooks: the room's link
    for a participant, the opening time while it is closed, the call list for a coordinator only."""
    from tests.conftest import login
    from webapp.extensions import db
    from webapp.models import CallSession

    requester, lead = make.rural(), make.specialist()
    consult = make.scheduled(requester, lead)
    db.session.add(CallSession(consult_id=consult.id, started_by_id=lead.id))
    db.session.commit()
    room_link = f'href="/consults/{consult.ref}/room"'

    def page(user) -> str:
        client = app.test_client()
        login(client, user)
        response = client.get(f"/consults/{consult.ref}")
        assert response.status_code == 200
        return response.get_data(as_text=True)

    as_requester, as_coordinator = page(requester), page(make.coordinator())
    assert room_link in as_requester and 'id="room-opens"' not in as_requester  # tests open rooms a day early
    assert "Video calls" not in as_requester and "never connected" not in as_requester
    assert "Video calls" in as_coordinator and "never connected" in as_coordinator
    app.config["ROOM_OPENS_MINUTES_BEFORE"], saved = 0, app.config["ROOM_OPENS_MINUTES_BEFORE"]
    try:
        closed = page(requester)
    finally:
        app.config["ROOM_OPENS_MINUTES_BEFORE"] = saved
    assert 'id="room-opens"' in closed and room_link not in closed
