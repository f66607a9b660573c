"""Real Yjs (the vendored browser bundle, run by Node) against the server's checks and pycrdt.

Two Yjs clients edit concurrently through a hub (one goes offline and merges on reconnect); every
update, in the order the hub received it, goes through `apply_update`: none may be refused, and
the server's document must equal every Yjs replica, in UTF-16 positions with CJK and emoji text.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require
from webapp.errors import ValidationFailed
from webapp.notes import services
from webapp.notes.yupdate import read_state_vector

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "static" / "vendor" / "yjs" / "yjs.min.js"
SCRIPT = Path(__file__).with_name("yjs_session.js")


@pytest.fixture(scope="module")
def session() -> dict:
    node = shutil.which("node")
    require(node is not None, "Node.js is not installed (needed to run the vendored Yjs bundle)")
    out = subprocess.run([node, str(SCRIPT), str(BUNDLE)], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_real_yjs_updates_are_accepted_and_merge_identically(session, make):
    assert session["hub"] == session["a"] == session["b"]  # the Yjs side converged by itself
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    authors = {"a": rural, "b": specialist}
    stored = 0
    for item in session["received"]:
        applied = services.apply_update(authors[item["author"]], consult, base64.b64decode(item["update"]))
        stored += applied.id is not None
    text = services.text_of(consult)
    assert text["history"] == session["hub"]["history"] and text["plan"] == session["hub"]["plan"]
    assert "😀" in text["history"] + text["plan"] and "心电图" in text["history"] + text["plan"]
    assert "\ufffd" not in text["history"] + text["plan"]
    assert read_state_vector(services.state_vector(consult)) == read_state_vector(
        base64.b64decode(session["hub_state"]))
    assert stored >= len(session["received"]) - 1  # only a reconnect exchange can be all duplicate
    services.forget()
    assert services.load_from_database(consult)[0] == text


def test_an_update_cutting_a_character_in_two_is_refused(session, make):
    """Yjs and yrs disagree on a cut surrogate pair; the server refuses it rather than diverge."""
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    first, cut_delete, cut_insert = (base64.b64decode(u) for u in session["cut"])
    services.apply_update(rural, consult, first)
    assert services.text_of(consult)["history"] == "a😀b"
    for update in (cut_delete, cut_insert):
        with pytest.raises(ValidationFailed, match="splits a character"):
            services.apply_update(rural, consult, update)
    assert services.text_of(consult)["history"] == "a😀b"
    assert session["cut_text"] != "a😀b"  # what that Yjs client shows instead (U+FFFD halves)
