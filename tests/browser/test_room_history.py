"""A long consult chat in Chromium: the latest page first, paging back to the first message, no hole.

A room of 1,800 messages (written straight into the database, as if over weeks): the page opens on
the latest messages, scrolled to the bottom; scrolling to the top (or the "Load earlier messages"
button) prepends the page before without moving what the reader sees, back to the very first
message. A doctor who comes back after a long absence and writes first, and a doctor who only sees
a live message far beyond what they have, both end up with every message 1..N shown once, in order.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.test_room_chat import DESKTOP, Watch, bodies, delivered, say, sign_in_and_open_room

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("generous_chat")]

ROOM = 1800
AWAY = 1000  # written while one doctor is offline: ten pages to fetch on the way back


def shown_seqs(page: Page) -> list[int]:
    """The sequence numbers of the stored messages shown, in page order (pending ones left out)."""
    return page.evaluate(
        "() => Array.from(document.querySelectorAll('#messages .msg[data-seq]:not(.pending)'))"
        ".map(m => +m.dataset.seq)")


def history(page: Page) -> dict:
    return page.evaluate("() => window.huizhenRoom.history()")


def at_bottom(page: Page) -> None:
    page.wait_for_function("() => { const l = document.getElementById('messages');"
                           " return l.scrollHeight - l.scrollTop - l.clientHeight < 2; }")


def offset_in_list(page: Page, seq: int) -> float:
    """Where a message is drawn, relative to the top of the scrolled list."""
    return page.evaluate("(seq) => document.querySelector(`#messages .msg[data-seq=\"${seq}\"]`)"
                         ".getBoundingClientRect().top - document.getElementById('messages')"
                         ".getBoundingClientRect().top", seq)


def scroll_back_to_the_start(page: Page) -> None:
    """Scroll the chat to its top, page after page, as a reader would, until nothing older is left."""
    for _ in range(100):
        state = history(page)
        if not state["hasOlder"]:
            return
        first = state["firstSeq"]
        page.evaluate("() => { document.getElementById('messages').scrollTop = 0; }")
        page.wait_for_function("(first) => { const h = window.huizhenRoom.history();"
                               " return !h.loadingOlder && (h.firstSeq < first || !h.hasOlder); }", arg=first)
    raise AssertionError("never reached the first message")


def test_a_long_room_opens_on_the_latest_page_pages_back_to_the_first_and_never_shows_a_hole(
        browser: Browser, live_server, make):
    base = live_server.url
    rural_user = make.rural(name="Dr Ma Xiaoli")
    specialist_user = make.specialist(name="Dr Zhou Wei")
    consult = make.scheduled(rural_user, specialist_user)
    ref = consult.ref
    assert make.chat_history(consult, ROOM) == list(range(1, ROOM + 1))
    watch = Watch()
    rural_ctx = browser.new_context(viewport=DESKTOP, locale="en-GB")
    spec_ctx = browser.new_context(viewport=DESKTOP, locale="en-GB")
    for ctx in (rural_ctx, spec_ctx):
        ctx.set_default_timeout(30_000)
    rural, spec = watch.page(rural_ctx, "rural"), watch.page(spec_ctx, "specialist")
    try:
        # the room opens on the latest page, scrolled to the newest message
        sign_in_and_open_room(rural, base, rural_user.email, ref)
        expect(delivered(rural)).to_have_count(100)
        assert shown_seqs(rural) == list(range(ROOM - 99, ROOM + 1))
        expect(bodies(rural).last).to_have_text(f"history {ROOM}")
        at_bottom(rural)
        expect(bodies(rural).last).to_be_in_viewport()
        earlier = rural.get_by_role("button", name="Load earlier messages")
        expect(earlier).to_be_visible()
        expect(earlier).to_be_enabled()

        # the button (for keyboard and screen-reader users) loads the page before, and what the
        # reader is looking at stays where it was
        rural.evaluate("() => { document.getElementById('messages').scrollTop = 400; }")
        anchor = ROOM - 90
        before = offset_in_list(rural, anchor)
        earlier.evaluate("b => b.click()")  # a click that does not scroll the list first
        rural.wait_for_function("(n) => window.huizhenRoom.history().firstSeq === n", arg=ROOM - 199)
        assert shown_seqs(rural) == list(range(ROOM - 199, ROOM + 1))
        assert abs(offset_in_list(rural, anchor) - before) < 3, "prepending moved the messages being read"

        # scrolling to the top loads the page before, keeping the view, back to the very first message
        at_top = rural.evaluate("(seq) => { const l = document.getElementById('messages'); l.scrollTop = 0;"
                                " return document.querySelector(`#messages .msg[data-seq=\"${seq}\"]`)"
                                ".getBoundingClientRect().top - l.getBoundingClientRect().top; }", ROOM - 199)
        rural.wait_for_function("(n) => window.huizhenRoom.history().firstSeq === n", arg=ROOM - 299)
        assert abs(offset_in_list(rural, ROOM - 199) - at_top) < 3, "prepending moved the messages being read"
        top_before = rural.evaluate("() => document.getElementById('messages').scrollTop")
        assert top_before > 80, "after prepending, the reader is not left at the top (no runaway loading)"
        scroll_back_to_the_start(rural)
        assert shown_seqs(rural) == list(range(1, ROOM + 1))  # every message once, in order
        expect(bodies(rural).first).to_have_text("history 1")
        expect(rural.locator("#messages .history-edge")).to_contain_text("This is the start of the conversation.")
        expect(earlier).to_be_hidden()

        # the specialist reads the latest page, then is away while 1,000 messages are written
        sign_in_and_open_room(spec, base, specialist_user.email, ref)
        expect(delivered(spec)).to_have_count(100)
        spec_ctx.set_offline(True)
        expect(spec.locator("#conn-banner")).to_contain_text("Connection lost")
        away = make.chat_history(consult, AWAY, prefix="while away")
        # back, they write first: their message is stored with the newest seq, before the ten
        # missed pages are on the page; every one of them is still fetched
        say(spec, "Back now: what happened overnight?")
        spec_ctx.set_offline(False)
        newest = away[-1] + 1
        spec.wait_for_function("(n) => { const h = window.huizhenRoom.history();"
                               " return h.caughtUp && h.lastSeq === n && window.huizhenRoom.state().outbox === 0; }",
                               arg=newest)
        expect(spec.locator("#conn-banner")).to_contain_text("Messages are up to date")
        assert shown_seqs(spec) == list(range(ROOM - 99, newest + 1))  # no hole, nothing twice, in order
        expect(bodies(spec).last).to_have_text("Back now: what happened overnight?")
        expect(spec.locator("#messages .msg.pending")).to_have_count(0)
        scroll_back_to_the_start(spec)
        assert shown_seqs(spec) == list(range(1, newest + 1))

        # the rural doctor never saw the 1,000 (nothing was broadcast); the specialist's live message
        # lies far beyond what they have: the gap is fetched, page by page, before they are caught up
        caught_up_at = "(n) => { const h = window.huizhenRoom.history(); return h.caughtUp && h.lastSeq === n; }"
        rural.wait_for_function(caught_up_at, arg=newest)
        assert shown_seqs(rural) == list(range(1, newest + 1))
        expect(bodies(rural).last).to_have_text("Back now: what happened overnight?")

        # a fresh page, and the doctor writes at once: the latest page and their message, no hole
        rural.reload()
        rural.wait_for_function("() => window.huizhenRoom && window.huizhenRoom.state().joined")
        say(rural, "Thank you, reading it now.")
        rural.wait_for_function(caught_up_at, arg=newest + 1)
        assert shown_seqs(rural) == list(range(newest - 99, newest + 2))
        spec.wait_for_function("(n) => window.huizhenRoom.history().lastSeq === n", arg=newest + 1)
        assert shown_seqs(spec) == list(range(1, newest + 2))
        assert watch.problems == [], watch.problems
    finally:
        rural_ctx.close()
        spec_ctx.close()
