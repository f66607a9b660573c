"""The chat outbox in headless Chromium: one user's, in the sender's order, never left behind.

- messages written while the socket is down are delivered after the reconnect in the order they
  were typed, once, to both doctors, although the backlog is larger than the per-second limit and
  the server fails on the first of them (issue 9 item 1);
- a second account signing in on the same browser profile never sends the first account's outbox
  (issue 9 item 6);
- signing out with unsent messages and unsaved notes says so, and then clears them (issue 8 item 13);
- a message queued in a consult that closes before it is sent is shown as NOT SENT with the reason,
  can be copied and dismissed, and is never dropped in silence (issue 9 item 6).
Screenshots: test-artifacts/outbox-*.png.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from tests.browser.test_room_chat import DESKTOP, Watch, bodies, delivered, say, sign_in_and_open_room, wait_joined
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import Consult, Message
from webapp.rooms import send, state

pytestmark = pytest.mark.browser

HUIZHEN_KEYS = "() => Object.keys(localStorage).filter(k => k.startsWith('huizhen'))"


def stored(ref: str) -> list[tuple[int, str, int]]:
    """(seq, body, sender id) of the consult's stored messages, in sequence order."""
    db.session.rollback()
    consult = db.session.scalar(select(Consult).where(Consult.ref == ref))
    return [(m.seq, m.body, m.sender_id) for m in db.session.scalars(
        select(Message).where(Message.consult_id == consult.id).order_by(Message.seq))]


def go_offline(page: Page) -> None:
    """The chat socket drops (as when the server is unreachable); the page keeps working."""
    page.evaluate("window.huizhenRoom.socket.disconnect()")
    page.wait_for_function("() => !window.huizhenRoom.state().joined")


def test_an_offline_backlog_larger_than_the_rate_limit_arrives_in_typed_order_once(
        browser: Browser, live_server, make, shots, app, monkeypatch):
    monkeypatch.setitem(app.config, "CHAT_MESSAGES_PER_SECOND", 3)
    state.reset(app)  # a fresh chat limiter
    rural_user, specialist_user = make.rural(name="Dr Ma Xiaoli"), make.specialist(name="Dr Zhou Wei")
    ref = make.scheduled(rural_user, specialist_user).ref
    # the first message of the flush fails on the server (a database hiccup), once
    real_fast, failing = send.post_message_fast, {"armed": False, "failed": []}

    def fails_once(*args, **kwargs):
        if failing["armed"]:
            failing["armed"] = False
            failing["failed"].append(args[1])
            raise RuntimeError("database connection lost")
        return real_fast(*args, **kwargs)

    # refusals by the rate limit are recorded (the real limiter decides)
    real_check, refused = send.check_rate, []

    def recording_check(user_id, **kwargs):
        try:
            return real_check(user_id, **kwargs)
        except send.TooManyMessages:
            refused.append(user_id)
            raise

    monkeypatch.setattr(send, "post_message_fast", fails_once)
    monkeypatch.setattr(send, "check_rate", recording_check)
    watch = Watch()
    rural_ctx, spec_ctx = browser.new_context(viewport=DESKTOP), browser.new_context(viewport=DESKTOP)
    for ctx in (rural_ctx, spec_ctx):
        ctx.set_default_timeout(20_000)
    rural, spec = watch.page(rural_ctx, "rural"), watch.page(spec_ctx, "specialist")
    try:
        sign_in_and_open_room(rural, live_server.url, rural_user.email, ref)
        sign_in_and_open_room(spec, live_server.url, specialist_user.email, ref)
        say(spec, "Send me the vitals when you can.")
        expect(delivered(rural)).to_have_count(1)

        go_offline(rural)
        typed = [f"Offline {n:02d}: obs round {n}" for n in range(1, 13)]  # 12 > 3 per second
        for text in typed:
            say(rural, text)
        expect(rural.locator("#messages .msg.pending")).to_have_count(12)
        assert stored(ref) == [(1, "Send me the vitals when you can.", specialist_user.id)]

        failing["armed"] = True
        rural.evaluate("window.huizhenRoom.socket.connect()")
        wait_joined(rural)
        say(rural, "Typed while the backlog is still going out.")  # must not overtake it
        everything = ["Send me the vitals when you can.", *typed, "Typed while the backlog is still going out."]
        for page in (rural, spec):
            expect(delivered(page)).to_have_count(14)
            expect(bodies(page)).to_have_text(everything)
            seqs = page.evaluate(
                "() => Array.from(document.querySelectorAll('#messages .msg')).map(m => +m.dataset.seq)")
            assert seqs == list(range(1, 15)), seqs
        expect(rural.locator("#messages .msg.pending, #messages .msg.failed")).to_have_count(0)
        assert rural.evaluate("() => window.huizhenRoom.state().outbox") == 0
        assert [body for _, body, _ in stored(ref)] == everything  # the database has the typed order
        assert len(failing["failed"]) == 1
        assert refused == [], "the reconnect flush was refused by the rate limit"
        rural.screenshot(path=str(shots / "outbox-backlog-in-order.png"), full_page=True)
        assert watch.problems == [], watch.problems
    finally:
        rural_ctx.close()
        spec_ctx.close()


def test_a_second_account_in_the_same_browser_never_sends_the_first_accounts_outbox(
        browser: Browser, live_server, make, generous_chat):
    rural_user, specialist_user = make.rural(name="Dr Ma Xiaoli"), make.specialist(name="Dr Zhou Wei")
    ref = make.scheduled(rural_user, specialist_user).ref
    watch = Watch()
    ctx = browser.new_context(viewport=DESKTOP)  # one shared clinic PC: one browser profile
    ctx.set_default_timeout(15_000)
    page = watch.page(ctx, "shared PC")
    try:
        sign_in_and_open_room(page, live_server.url, rural_user.email, ref)
        go_offline(page)
        say(page, "K+ 6.1, repeat sample sent — Dr Ma")
        assert len(page.evaluate(HUIZHEN_KEYS)) == 1  # Dr Ma's outbox, waiting

        # the session ends without any script running (idle sign-out, browser closed…)
        ctx.clear_cookies()
        sign_in_and_open_room(page, live_server.url, specialist_user.email, ref)
        expect(page.locator("#messages .empty-chat")).to_have_text("No messages yet.")
        page.wait_for_timeout(1_500)  # time in which a replay would have been sent
        assert stored(ref) == []
        expect(page.locator("#messages .msg")).to_have_count(0)
        assert page.evaluate(HUIZHEN_KEYS) == []  # nothing of Dr Ma's is readable any more

        # even a key of another user that got there some other way is neither sent nor kept
        page.evaluate("""([key, ref]) => localStorage.setItem(key, JSON.stringify({next: 2, items: [{
            payload: {ref: ref, client_id: 'planted-0000001', body: 'not mine', client_seq: 1},
            preview: null, queuedAt: Date.now()}]}))""", [f"huizhen:outbox:{rural_user.id}:{ref}", ref])
        page.reload()
        wait_joined(page)
        page.wait_for_timeout(1_500)
        assert stored(ref) == []
        expect(page.locator("#messages .msg")).to_have_count(0)
        assert page.evaluate(HUIZHEN_KEYS) == []
        # the specialist's own messages do go out, under their name
        say(page, "Specialist here.")
        expect(delivered(page)).to_have_count(1)
        assert stored(ref) == [(1, "Specialist here.", specialist_user.id)]
        assert watch.problems == [], watch.problems
    finally:
        ctx.close()


def test_signing_out_with_unsent_messages_and_notes_warns_then_clears(browser: Browser, live_server, make,
                                                                     shots, generous_chat):
    rural_user, specialist_user = make.rural(name="Dr Ma Xiaoli"), make.specialist(name="Dr Zhou Wei")
    ref = make.scheduled(rural_user, specialist_user).ref
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    dialogs: list[str] = []
    answers = iter([False, True])  # first Cancel, then OK

    def on_dialog(dialog) -> None:
        dialogs.append(dialog.message)
        if next(answers):
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        sign_in_and_open_room(page, live_server.url, rural_user.email, ref)
        page.wait_for_function("() => window.huizhenNotes && window.huizhenNotes.socket.connected")
        go_offline(page)
        say(page, "Unsent one")
        say(page, "Unsent two")
        page.evaluate("window.huizhenNotes.socket.disconnect()")
        page.locator("#notes-findings").click()
        page.keyboard.type("Notes typed offline", delay=5)

        page.get_by_role("button", name="Sign out").click()  # Cancel: still signed in, nothing lost
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        assert len(dialogs) == 1
        assert "2 chat messages not sent yet" in dialogs[0], dialogs
        assert "case notes not saved yet in 1 consult" in dialogs[0], dialogs
        assert "deleted" in dialogs[0]
        assert sorted(page.evaluate(HUIZHEN_KEYS)) == sorted([f"huizhen:notes:{rural_user.id}:{ref}",
                                                             f"huizhen:outbox:{rural_user.id}:{ref}"])

        page.get_by_role("button", name="Sign out").click()  # OK: signed out, and nothing kept
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        assert len(dialogs) == 2
        assert page.evaluate(HUIZHEN_KEYS) == []
        page.screenshot(path=str(shots / "outbox-signed-out.png"), full_page=True)
        assert stored(ref) == []
        # no warning when nothing is waiting
        sign_in_and_open_room(page, live_server.url, rural_user.email, ref)
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        assert len(dialogs) == 2
        assert errors == [], errors
    finally:
        ctx.close()


def test_a_message_queued_in_a_consult_that_closes_is_shown_as_not_sent(browser: Browser, live_server, make,
                                                                       shots, generous_chat):
    rural_user, specialist_user = make.rural(name="Dr Ma Xiaoli"), make.specialist(name="Dr Zhou Wei")
    ref = make.scheduled(rural_user, specialist_user).ref
    watch = Watch()
    ctx = browser.new_context(viewport=DESKTOP, permissions=["clipboard-read", "clipboard-write"])
    ctx.set_default_timeout(15_000)
    page = watch.page(ctx, "rural")
    text = "Please send the echo report before Friday."
    try:
        sign_in_and_open_room(page, live_server.url, rural_user.email, ref)
        go_offline(page)
        say(page, text)
        page.close()  # the tab is closed while the message waits

        db.session.rollback()
        consults.cancel(rural_user, ref, "transferred to the regional hospital")

        page = watch.page(ctx, "rural")
        page.goto(f"{live_server.url}/consults/{ref}/room")  # now read-only
        wait_joined(page)
        failed = page.locator("#messages .msg.failed")
        expect(failed).to_have_count(1)
        expect(failed.locator(".body")).to_have_text(text)
        expect(failed.locator(".meta")).to_contain_text("NOT SENT")
        expect(failed.locator(".not-sent .reason")).to_contain_text("closed")
        page.screenshot(path=str(shots / "outbox-not-sent.png"), full_page=True)
        failed.get_by_role("button", name="Copy text").click()
        expect(failed.get_by_role("button", name="Copied")).to_be_visible()
        assert page.evaluate("() => navigator.clipboard.readText()") == text
        assert stored(ref) == []

        page.reload()  # still said, until dismissed
        wait_joined(page)
        expect(page.locator("#messages .msg.failed .body")).to_have_text([text])
        page.locator("#messages .msg.failed").get_by_role("button", name="Dismiss").click()
        expect(page.locator("#messages .msg")).to_have_count(0)
        assert page.evaluate("() => window.huizhenRoom.state().outbox") == 0
        page.reload()
        wait_joined(page)
        expect(page.locator("#messages .msg")).to_have_count(0)
        assert stored(ref) == []
        assert watch.problems == [], watch.problems
    finally:
        ctx.close()


def test_a_message_stored_whose_ack_was_lost_with_the_connection_is_shown_once_and_not_pending(
        browser: Browser, live_server, make, shots, monkeypatch):
    """The server stores a message and the connection drops before its ack: after the rejoin the page
    shows it once, from the join's backlog, and the outbox's resend (answered as already stored) must
    not leave a second, pending bubble behind."""
    from flask_socketio import disconnect

    rural_user, specialist_user = make.rural(), make.specialist()
    ref = make.scheduled(rural_user, specialist_user).ref
    real_send, dropped = send.send_message, []

    def stored_then_dropped(*args, **kwargs):
        sent = real_send(*args, **kwargs)
        if not dropped:  # the first send only: stored, then the connection is lost before the ack
            dropped.append(sent.wire["client_id"])
            disconnect()
        return sent

    monkeypatch.setattr(send, "send_message", stored_then_dropped)
    watch = Watch()
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(20_000)
    page = watch.page(context, "rural")
    try:
        sign_in_and_open_room(page, live_server.url, rural_user.email, ref)
        say(page, "Stored, but its ack was lost")
        expect(delivered(page)).to_have_count(1, timeout=30_000)
        page.wait_for_function("() => window.huizhenRoom.state().joined && window.huizhenRoom.state().outbox === 0",
                               timeout=30_000)
        expect(page.locator("#messages .msg.pending")).to_have_count(0)
        expect(bodies(page)).to_have_text(["Stored, but its ack was lost"])
        assert dropped and [body for _, body, _ in stored(ref)] == ["Stored, but its ack was lost"]
        page.screenshot(path=str(shots / "outbox-ack-lost.png"))
    finally:
        context.close()
