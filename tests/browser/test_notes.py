"""Shared case notes in headless Chromium: two doctors type into the same section at once.

Both end with the same text holding both inputs; each sees the other's name on the section being
edited; edits typed while disconnected merge on reconnect; a reload shows the persisted notes;
the revision history lists both authors; after sign-off the panel turns read-only and the consult
page shows the signed notes. Screenshots: test-artifacts/notes-NN-*.png.
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import PASSWORD, Factory
from tests.notes.realserver import unpatch_socket_server
from webapp.extensions import db
from webapp.models import Consult
from webapp.notes import services as notes
from webapp.notes.services import SECTIONS

pytestmark = pytest.mark.browser

RURAL_TEXT = "Rural: pain on exertion, relieved by rest; no syncope."
SPECIALIST_TEXT = "Specialist: likely stable angina, low-risk features."
SAVED = "All changes saved"
STORED_COPY_HAS = """(needle) => {
  const key = Object.keys(localStorage).find(k => k.startsWith('huizhen:notes:'));
  if (!key) return false;
  const doc = new Y.Doc();
  Y.applyUpdate(doc, Uint8Array.from(atob(localStorage.getItem(key)), c => c.charCodeAt(0)));
  return doc.getText('findings').toString().includes(needle);
}"""


def _watch(page: Page, problems: list[str], who: str) -> Page:
    """Collect script errors and CSP refusals."""
    page.on("console", lambda msg: problems.append(f"{who} console: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    page.on("pageerror", lambda exc: problems.append(f"{who} page error: {exc}"))
    return page


def _signed_in(browser, base: str, email: str, problems: list[str], who: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    context.set_default_timeout(15_000)
    page = _watch(context.new_page(), problems, who)
    page.goto(f"{base}/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("main button[type=submit]")  # not the header's language switch
    page.wait_for_url(lambda url: "/login" not in url)
    return context, page


def _area(page: Page, section: str):
    return page.locator(f"textarea[data-section={section}]")


def _wait_same(pages: list[Page], section: str, *parts: str, timeout: float = 20.0) -> str:
    """Wait until every page shows the same text in the section, containing every part."""
    deadline = time.monotonic() + timeout
    values: list[str] = []
    while time.monotonic() < deadline:
        values = [_area(p, section).input_value() for p in pages]
        if len(set(values)) == 1 and all(part in values[0] for part in parts):
            return values[0]
        time.sleep(0.1)
    raise AssertionError(f"{section} did not converge: {values!r}")


def test_two_doctors_edit_the_same_section_at_once(app, live_server, browser, shots):
    unpatch_socket_server(app)  # a Flask-SocketIO test client may have run earlier in the session
    make = Factory()
    rural = make.rural(name="Dr Ma Xiaoli")
    specialist = make.specialist(name="Dr Zhou Wei")
    consult = make.scheduled(rural, specialist, chief_complaint="Chest tightness on exertion for 3 weeks")
    ref = consult.ref
    notes.apply_update(rural, consult, _history_update("60-year-old man, 3 weeks of exertional chest "
                                                       "tightness. Smoker, hypertensive. 心电图: ST↓ V4–V6."))
    room = f"{live_server.url}/consults/{ref}/room"
    problems: list[str] = []
    ctx_r, r = _signed_in(browser, live_server.url, rural.email, problems, "rural")
    ctx_s, s = _signed_in(browser, live_server.url, specialist.email, problems, "specialist")
    try:
        for page in (r, s):
            page.goto(room)
            expect(page.locator("#notes-status")).to_have_text(SAVED)
            expect(_area(page, "history")).to_have_value(notes.text_of(_consult(ref))["history"])
            expect(_area(page, "assessment")).to_be_editable()

        # 1. Both type into the same section at the same time, in interleaved bursts.
        _area(r, "assessment").click()
        _area(s, "assessment").click()
        r_chunks = [RURAL_TEXT[i:i + 6] for i in range(0, len(RURAL_TEXT), 6)]
        s_chunks = [SPECIALIST_TEXT[i:i + 6] for i in range(0, len(SPECIALIST_TEXT), 6)]
        for i in range(max(len(r_chunks), len(s_chunks))):
            if i < len(r_chunks):
                r.keyboard.type(r_chunks[i], delay=15)
            if i < len(s_chunks):
                s.keyboard.type(s_chunks[i], delay=15)
        merged = _wait_same([r, s], "assessment", RURAL_TEXT, SPECIALIST_TEXT)
        assert len(merged) == len(RURAL_TEXT) + len(SPECIALIST_TEXT)
        for page in (r, s):
            expect(page.locator("#notes-status")).to_have_text(SAVED)
        # Each sees the other's name on the section being edited, with their caret.
        expect(r.locator(".notes-section[data-section=assessment] .editor-badge")).to_have_text(
            "Dr Zhou Wei is editing")
        expect(s.locator(".notes-section[data-section=assessment] .editor-badge")).to_have_text(
            "Dr Ma Xiaoli is editing")
        expect(r.locator(".notes-section[data-section=assessment] .remote-caret")).to_have_count(1)
        expect(r.locator(".notes-section[data-section=history] .editor-badge")).to_have_count(0)
        r.locator(".notes-panel").scroll_into_view_if_needed()
        r.screenshot(path=str(shots / "notes-01-rural-both-typing.png"), full_page=True)
        s.locator(".notes-panel").screenshot(path=str(shots / "notes-02-specialist-panel.png"))
        assert notes.text_of(_consult(ref))["assessment"] == merged  # persisted as typed, no save button

        # 2. The rural doctor's connection drops; both keep typing in the plan; it comes back.
        r.evaluate("window.huizhenNotes.socket.disconnect()")
        expect(r.locator("#notes-status")).to_contain_text("Offline — changes will sync")
        _area(r, "plan").click()
        r.keyboard.type("Offline: aspirin 100 mg daily.", delay=10)
        _area(s, "plan").click()
        s.keyboard.type("Online: arrange exercise ECG.", delay=10)
        expect(s.locator("#notes-status")).to_have_text(SAVED)
        r.locator(".notes-panel").screenshot(path=str(shots / "notes-03-rural-offline.png"))
        assert "Offline:" not in notes.text_of(_consult(ref))["plan"]
        r.evaluate("window.huizhenNotes.socket.connect()")
        _wait_same([r, s], "plan", "Offline: aspirin 100 mg daily.", "Online: arrange exercise ECG.")
        expect(r.locator("#notes-status")).to_have_text(SAVED)

        # 2b. Offline again, and the tab is closed before the connection returns: nothing is lost.
        r.evaluate("window.huizhenNotes.socket.disconnect()")
        _area(r, "findings").click()
        r.keyboard.type("BP 150/90, typed offline, tab closed.", delay=5)
        r.wait_for_function(STORED_COPY_HAS, arg="tab closed.")  # written within 300 ms of typing
        r.close()
        assert "typed offline" not in notes.text_of(_consult(ref))["findings"]
        r = _watch(ctx_r.new_page(), problems, "rural")
        r.goto(room)
        _wait_same([r, s], "findings", "BP 150/90, typed offline, tab closed.")
        expect(r.locator("#notes-status")).to_have_text(SAVED)
        assert notes.text_of(_consult(ref))["findings"] == "BP 150/90, typed offline, tab closed."
        r.wait_for_function("() => !Object.keys(localStorage).some(k => k.startsWith('huizhen:notes:'))")

        # 3. A reload shows what was saved; the server has exactly what the browsers show.
        expected = {name: _area(s, name).input_value() for name in SECTIONS}
        r.reload()
        expect(r.locator("#notes-status")).to_have_text(SAVED)
        assert {name: _area(r, name).input_value() for name in SECTIONS} == expected
        assert notes.text_of(_consult(ref)) == expected

        # 4. The revision history: who changed what, when.
        r.goto(f"{live_server.url}/consults/{ref}/notes/history")
        revisions = r.locator("#revisions > li")
        expect(revisions.first).to_be_visible()
        expect(r.locator("#revisions")).to_contain_text("Dr Zhou Wei")
        expect(r.locator("#revisions")).to_contain_text("Dr Ma Xiaoli")
        expect(r.locator("#revisions")).to_contain_text("Assessment")
        r.screenshot(path=str(shots / "notes-04-history.png"), full_page=True)
        r.goto(room)
        expect(r.locator("#notes-status")).to_have_text(SAVED)

        # 5. Sign-off fixes the notes: the open panels turn read-only, the case shows the signed notes.
        signer = ctx_s.new_page()  # the specialist signs in another tab; both rooms stay open
        signer.goto(f"{live_server.url}/consults/{ref}/answer")
        signer.get_by_label("Assessment").fill("Stable angina.")
        signer.get_by_label("Recommended plan").fill("Aspirin, statin, exercise ECG.")
        signer.get_by_role("button", name="Sign and send").click()
        expect(signer.locator(".flash.success")).to_contain_text("Recommendation signed")
        for page in (r, s):
            expect(page.locator("#notes-status")).to_have_text("Signed off — the notes are read-only")
            expect(_area(page, "plan")).not_to_be_editable()
        r.locator(".notes-panel").screenshot(path=str(shots / "notes-05-room-signed.png"))
        r.goto(f"{live_server.url}/consults/{ref}")
        card = r.locator("#signed-notes")
        expect(card).to_contain_text("Case notes (signed)")
        expect(card).to_contain_text(RURAL_TEXT)
        expect(card).to_contain_text("Offline: aspirin 100 mg daily.")
        r.screenshot(path=str(shots / "notes-06-signed-on-consult.png"), full_page=True)
        assert notes.signed_notes(_consult(ref)) == expected
        assert not problems, problems
    finally:
        ctx_r.close()
        ctx_s.close()


def _consult(ref: str) -> Consult:
    db.session.rollback()
    return db.session.scalar(db.select(Consult).where(Consult.ref == ref))


def _history_update(text: str) -> bytes:
    from pycrdt import Doc, Text

    doc = Doc()
    doc.get("history", type=Text).insert(0, text)
    return doc.get_update()
