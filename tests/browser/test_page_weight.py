"""The consult room's page weight in Chromium: bytes and requests, cold and warm, with generous
bounds (the goal itself, under an emulated rural link, is measured by bench/room_load.py)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from bench.room_load import USABLE_JS, Traffic
from tests.browser.test_call import _two_doctors

pytestmark = pytest.mark.browser


PHONE = {"width": 360, "height": 640}  # a common phone: the notes are below the fold


def _open(context, room: str, *, cold: bool):
    """Open the room on a phone-sized page of `context`; its traffic until usable and 2 s after load."""
    page = context.new_page()
    page.set_viewport_size(PHONE)
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    if cold:
        cdp.send("Network.clearBrowserCache")
    traffic = Traffic(cdp)
    page.goto(room)
    page.wait_for_function(USABLE_JS, timeout=30000)
    page.wait_for_load_state("load")
    page.wait_for_timeout(2000)
    return page, traffic


def _show_notes(page) -> None:
    """Bring the notes into view as a doctor would: on a phone they are behind the Notes tab."""
    tab = page.locator("#room-tab-notes")
    if tab.is_visible():
        tab.click()
    page.locator("#notes").scroll_into_view_if_needed()


def test_room_cold_and_warm_weight_and_yjs_only_when_the_notes_are_in_view(app, live_server, browser, shots):
    with _two_doctors(browser, live_server) as call:
        context = call.rural_page.context

        cold_page, cold = _open(context, call.room, cold=True)
        urls = [url for url, _size in cold.urls]
        assert any("/static/js/room.js?v=" in u for u in urls)
        top = cold_page.evaluate("() => document.getElementById('notes').getBoundingClientRect().top")
        assert not any("/vendor/yjs/" in u for u in urls), (top, urls)  # not before the notes are opened
        assert cold.network_requests() <= 12, urls
        assert cold.bytes <= 100 * 1024, cold.urls  # 232 KB uncompressed before compression
        cold_page.screenshot(path=str(shots / "weight-01-phone-cold.png"))

        # Opening the notes (the Notes tab on a phone) loads Yjs and starts the editor.
        _show_notes(cold_page)
        cold_page.wait_for_function("() => window.huizhenNotes && window.huizhenNotes.state().joined", timeout=20000)
        assert any("/vendor/yjs/yjs.min.js?v=" in u for u, _ in cold.urls)
        expect(cold_page.locator("#notes-status")).not_to_have_text("Connecting…")
        cold_page.fill("#notes-history", "Typed after a lazy load")
        cold_page.wait_for_function("() => !window.huizhenNotes.state().dirty && !window.huizhenNotes.state().inflight")
        cold_page.screenshot(path=str(shots / "weight-02-phone-notes.png"))
        cold_page.close()

        # A returning visit: the page itself and nothing from /static/ (hashed, immutable).
        warm_page, warm = _open(context, call.room, cold=False)
        warm_urls = [url for url, _size in warm.urls]
        assert not any("/static/" in u for u in warm_urls), warm_urls
        assert warm.network_requests() <= 3, warm_urls
        assert warm.bytes <= 20 * 1024, warm.urls
        _show_notes(warm_page)  # Yjs from the cache
        warm_page.wait_for_function("() => window.huizhenNotes && window.huizhenNotes.state().joined", timeout=20000)
        expect(warm_page.locator("#notes-history")).to_have_value("Typed after a lazy load")
        assert not any("/static/" in u for u, _ in warm.urls)
