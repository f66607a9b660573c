"""Consult-room chat in headless Chromium: the two doctors, each in their own browser context.

Both parties open the room of a scheduled consult and talk (Enter sends), see each other's messages
in order, read receipts ("Seen by"), the typing indicator and presence; HTML in a message is shown
as text; a connection cut in one browser shows the banner, a message written offline is delivered
once after the connection is back, and what the other side wrote meanwhile is backfilled; an image
attached in chat shows as a thumbnail on the other side. Screenshots: test-artifacts/room-chat-*.png.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Browser, BrowserContext, Page, expect
from sqlalchemy import select

from tests.conftest import PASSWORD
from webapp.extensions import db
from webapp.models import Consult
from webapp.rooms import events as room_events
from webapp.rooms import send, services

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("generous_chat")]

DESKTOP = {"width": 1280, "height": 900}
TABLET = {"width": 768, "height": 1024}
XSS = "<img src=x onerror=alert(1)> is what the lab report says"


class Watch:
    """Browser problems on a page: script errors, CSP refusals, server errors, dialogs (alert())."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def page(self, context: BrowserContext, who: str) -> Page:
        page = context.new_page()

        def on_console(msg) -> None:
            # "Failed to load resource": a 4xx page; ERR_INTERNET_DISCONNECTED: a reconnect attempt
            # made while the test itself has taken the context offline (set_offline)
            if (msg.type == "error" and "Failed to load resource" not in msg.text
                    and "ERR_INTERNET_DISCONNECTED" not in msg.text):
                self.problems.append(f"{who} console: {msg.text}")

        def on_response(response) -> None:
            if response.status >= 500 or (response.status >= 400 and response.request.resource_type
                                          in {"stylesheet", "image", "script", "font"}):
                self.problems.append(f"{who} {response.status} {response.request.method} {response.url}")

        def on_dialog(dialog) -> None:
            self.problems.append(f"{who} dialog: {dialog.message}")
            dialog.dismiss()

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.problems.append(f"{who} page error: {exc}"))
        page.on("response", on_response)
        page.on("dialog", on_dialog)
        return page


def sign_in_and_open_room(page: Page, base: str, email: str, ref: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    page.goto(f"{base}/consults/{ref}/room")
    wait_joined(page)


def wait_joined(page: Page) -> None:
    page.wait_for_function("() => window.huizhenRoom && window.huizhenRoom.state().joined")


def say(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def bodies(page: Page):
    return page.locator("#messages .msg .body")


def delivered(page: Page):
    """Messages the server has stored (a sequence number), not ones still waiting to be sent."""
    return page.locator("#messages .msg[data-seq]:not(.pending)")


def scan_png(path: Path) -> Path:
    img = Image.new("RGB", (480, 320), (245, 240, 230))
    draw = ImageDraw.Draw(img)
    draw.ellipse((140, 80, 340, 240), fill=(190, 70, 60), outline=(120, 30, 30), width=6)
    draw.rectangle((20, 20, 460, 300), outline=(40, 40, 40), width=4)
    out = io.BytesIO()
    img.save(out, "PNG")
    path.write_bytes(out.getvalue())
    return path


def without_messages(emit):
    """The server's emit with every chat "message" event lost (presence, typing, read still go)."""

    def lossy(event, data, **kwargs):
        return False if event == "message" else emit(event, data, **kwargs)

    return lossy


def test_two_doctors_chat_in_the_consult_room(browser: Browser, live_server, make, shots, tmp_path, monkeypatch):
    base = live_server.url
    rural_user = make.rural(name="Dr Ma Xiaoli")
    specialist_user = make.specialist(name="Dr Zhou Wei")
    ref = make.scheduled(rural_user, specialist_user, chief_complaint="Chest tightness on exertion").ref
    watch = Watch()
    rural_ctx = browser.new_context(viewport=DESKTOP, locale="en-GB")
    spec_ctx = browser.new_context(viewport=DESKTOP, locale="en-GB")
    for ctx in (rural_ctx, spec_ctx):
        ctx.set_default_timeout(15_000)
    rural, spec = watch.page(rural_ctx, "rural"), watch.page(spec_ctx, "specialist")
    try:
        sign_in_and_open_room(rural, base, rural_user.email, ref)
        sign_in_and_open_room(spec, base, specialist_user.email, ref)
        expect(rural.locator(".empty-chat")).to_have_text("No messages yet.")

        # presence: each sees both names (listed by account, the rural doctor's is older)
        expect(rural.locator("#people li .person-name")).to_have_text(["Dr Ma Xiaoli (you)", "Dr Zhou Wei"])
        expect(spec.locator("#people li .person-name")).to_have_text(["Dr Ma Xiaoli", "Dr Zhou Wei (you)"])
        expect(rural.locator("#people li .role")).to_have_text(["Requesting doctor", "Lead specialist"])

        # a conversation both ways, Enter sends
        say(rural, "Good morning, the ECG is attached to the case.")
        expect(bodies(spec)).to_have_text(["Good morning, the ECG is attached to the case."])
        # typing indicator
        spec.get_by_role("textbox", name="Message").press_sequentially("Loo", delay=20)
        expect(rural.locator("#typing")).to_have_text("Dr Zhou Wei is typing…")
        say(spec, "Looks like ST depression in V4–V6. Any troponin?")
        expect(bodies(rural).last).to_have_text("Looks like ST depression in V4–V6. Any troponin?")
        # the message they were typing has arrived: the indicator goes at once (not after its 5 s expiry)
        expect(rural.locator("#typing")).to_have_text("", timeout=1_000)
        say(rural, "Troponin I 0.08 ng/mL at 3 hours.")
        say(spec, "Thank you.\nLet's discuss angiography at the appointment.")
        conversation = [
            "Good morning, the ECG is attached to the case.",
            "Looks like ST depression in V4–V6. Any troponin?",
            "Troponin I 0.08 ng/mL at 3 hours.",
            "Thank you.\nLet's discuss angiography at the appointment.",
        ]
        for page in (rural, spec):
            expect(bodies(page)).to_have_text(conversation)
            expect(delivered(page)).to_have_count(4)
            assert page.evaluate(
                "() => Array.from(document.querySelectorAll('#messages .msg')).map(m => +m.dataset.seq)"
            ) == [1, 2, 3, 4]
        expect(rural.locator("#messages .msg.mine")).to_have_count(2)
        expect(spec.locator("#messages .msg.mine")).to_have_count(2)
        expect(rural.locator("#messages .msg").nth(1).locator(".meta")).to_contain_text("Dr Zhou Wei")
        expect(rural.locator("#messages .msg").nth(0).locator(".meta")).to_contain_text("You")

        # read receipts: "Seen by" under the last of my messages the other has seen
        expect(spec.locator("#messages .msg.mine .seen").last).to_have_text("Seen by Dr Ma Xiaoli")
        expect(rural.locator("#messages .msg.mine .seen").last).to_have_text("Seen by Dr Zhou Wei")
        expect(rural.locator("#messages .msg.mine .seen").first).to_have_text("")

        # lost broadcasts (a message queue outage): messages are stored and acked, but nobody is told.
        # Each sender's ack then shows a gap below its own message, which it fetches, in order.
        db.session.rollback()
        consult = db.session.scalar(select(Consult).where(Consult.ref == ref))
        services.post_message(consult.requester, consult, "lost-broadcast-1", "ECG repeated: unchanged.")
        with monkeypatch.context() as outage:
            outage.setattr(room_events, "emit", without_messages(room_events.emit))
            say(spec, "Noted.")
            expect(bodies(spec)).to_have_text([*conversation, "ECG repeated: unchanged.", "Noted."])
            expect(delivered(spec)).to_have_count(6)
        # HTML in a message is text, never markup; nothing runs
        say(rural, XSS)
        for page in (rural, spec):
            expect(bodies(page)).to_have_text([*conversation, "ECG repeated: unchanged.", "Noted.", XSS])
            expect(delivered(page)).to_have_count(7)
        for page in (rural, spec):
            expect(bodies(page).last).to_have_text(XSS)
            expect(page.locator("#messages img")).to_have_count(0)
            assert page.locator("#messages .msg .body").last.inner_html() == (
                "&lt;img src=x onerror=alert(1)&gt; is what the lab report says")
        # links are shown as text, not fetched or turned into anchors
        say(spec, "Guideline: https://example.invalid/acs-guideline")
        expect(bodies(rural).last).to_have_text("Guideline: https://example.invalid/acs-guideline")
        expect(rural.locator("#messages .msg .body a")).to_have_count(0)

        rural.screenshot(path=str(shots / "room-chat-rural.png"), full_page=True)
        spec.screenshot(path=str(shots / "room-chat-specialist.png"), full_page=True)

        # the specialist's connection drops
        spec_ctx.set_offline(True)
        expect(spec.locator("#conn-banner")).to_be_visible()
        expect(spec.locator("#conn-banner")).to_contain_text("Connection lost")
        expect(rural.locator("#people li .person-name")).to_have_text(["Dr Ma Xiaoli (you)"])
        expect(spec.locator("#people li.online")).to_have_count(0)  # presence unknown while cut off
        expect(spec.locator("#typing")).to_have_text("")
        say(spec, "Written while offline: please repeat the ECG in 1 hour.")
        expect(spec.locator("#messages .msg.pending .body")).to_have_text(
            ["Written while offline: please repeat the ECG in 1 hour."])
        say(rural, "Did you get my last message?")  # sent while the specialist is away
        expect(delivered(rural)).to_have_count(9)
        spec.screenshot(path=str(shots / "room-chat-offline.png"), full_page=True)

        spec_ctx.set_offline(False)
        expect(spec.locator("#conn-banner")).to_contain_text("Connection restored")
        offline_text = "Written while offline: please repeat the ECG in 1 hour."
        missed_text = "Did you get my last message?"
        for page in (rural, spec):
            expect(page.locator("#messages .msg .body", has_text=offline_text)).to_have_count(1)
            expect(page.locator("#messages .msg .body", has_text=missed_text)).to_have_count(1)
            expect(delivered(page)).to_have_count(10)
            expect(page.locator("#messages .msg.pending")).to_have_count(0)
            seqs = page.evaluate(
                "() => Array.from(document.querySelectorAll('#messages .msg')).map(m => +m.dataset.seq)")
            assert seqs == list(range(1, 11)), seqs
        expect(rural.locator("#people li")).to_have_count(2)
        expect(spec.locator("#people li.online")).to_have_count(2)
        assert spec.evaluate("() => window.huizhenRoom.state().outbox") == 0

        # an image attached in chat: uploaded over HTTP, announced over the socket, a thumbnail
        rural.locator("#chat-file").set_input_files(str(scan_png(tmp_path / "wound-photo.png")))
        for page in (rural, spec):
            thumb = page.locator("#messages .msg[data-seq]:not(.pending) img.chat-thumb")
            expect(thumb).to_have_count(1)
            thumb.scroll_into_view_if_needed()
            expect(thumb).to_be_visible()
            page.wait_for_function(
                "() => { const i = document.querySelector('#messages .msg[data-seq] img.chat-thumb');"
                " return i && i.complete && i.naturalWidth === 480; }")
            expect(thumb).to_have_attribute("alt", "wound-photo.png")
        expect(delivered(spec)).to_have_count(11)
        # the thumbnail bubble is scrolled fully into the chat's view once the image has loaded
        spec.wait_for_function(
            "() => { const l = document.getElementById('messages');"
            " return l.scrollHeight - l.scrollTop - l.clientHeight < 2; }")
        spec.screenshot(path=str(shots / "room-chat-attachment.png"), full_page=True)

        # tablet width: the room reflows, nothing scrolls sideways
        spec.set_viewport_size(TABLET)
        overflow = spec.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the room scrolls sideways by {overflow}px at 768px"
        chat_top = spec.locator("section.chat").bounding_box()["y"]
        notes_top = spec.locator("section.notes-panel").bounding_box()["y"]
        call_top = spec.locator("section.call").bounding_box()["y"]
        assert call_top < chat_top < notes_top, "on a tablet the chat comes right after the call"
        spec.screenshot(path=str(shots / "room-chat-tablet.png"), full_page=True)

        # a reload starts from the database: the same history, once, in order
        rural.reload()
        wait_joined(rural)
        expect(delivered(rural)).to_have_count(11)
        assert watch.problems == [], watch.problems
    finally:
        rural_ctx.close()
        spec_ctx.close()


def test_a_message_the_server_failed_to_store_is_retried_not_dropped(browser: Browser, live_server, make,
                                                                      monkeypatch):
    """A server error on send is not a refusal: the browser keeps the message and sends it again."""
    base = live_server.url
    rural_user = make.rural(name="Dr Ma Xiaoli")
    specialist_user = make.specialist(name="Dr Zhou Wei")
    ref = make.scheduled(rural_user, specialist_user).ref
    real_post, failures = send.post_message_fast, []

    def failing_twice(*args, **kwargs):  # the send path's first step: storing the message
        if len(failures) < 2:
            failures.append(args[1])  # the client id
            raise RuntimeError("database connection lost")  # the handler answers server_error (500)
        return real_post(*args, **kwargs)

    monkeypatch.setattr(send, "post_message_fast", failing_twice)
    watch = Watch()
    rural_ctx = browser.new_context(viewport=DESKTOP, locale="en-GB")
    spec_ctx = browser.new_context(viewport=DESKTOP, locale="en-GB")
    rural, spec = watch.page(rural_ctx, "rural"), watch.page(spec_ctx, "specialist")
    try:
        sign_in_and_open_room(rural, base, rural_user.email, ref)
        sign_in_and_open_room(spec, base, specialist_user.email, ref)
        say(rural, "BP 90/60 after the second dose.")
        expect(rural.locator("#messages .msg.pending .meta")).to_contain_text("retrying")
        # 1 s, then 2 s later: stored on the third try, shown once on both sides, not marked failed
        expect(delivered(spec)).to_have_count(1, timeout=15_000)
        expect(delivered(rural)).to_have_count(1, timeout=15_000)
        expect(bodies(spec)).to_have_text(["BP 90/60 after the second dose."])
        expect(rural.locator("#messages .msg.failed")).to_have_count(0)
        expect(rural.locator("#chat-error")).to_have_text("")
        assert len(failures) == 2 and failures[0] == failures[1]  # the same message, same client id
        assert rural.evaluate("() => window.huizhenRoom.state().outbox") == 0
        db.session.rollback()
        consult = db.session.scalar(select(Consult).where(Consult.ref == ref))
        assert [m.body for m in services.messages_after(consult, 0)] == ["BP 90/60 after the second dose."]
        assert watch.problems == [], watch.problems
    finally:
        rural_ctx.close()
        spec_ctx.close()


PHONE = {"width": 390, "height": 844}


def test_three_people_see_seen_by_n_roles_and_a_trainees_question(browser: Browser, live_server, make, shots):
    """The requester, the lead and a trainee in one room: the requester's message shows "Seen by" the
    lead, then "Seen by 2" once the trainee has read it (the names on hover and focus); the people list
    shows roles; the trainee's question carries its "Trainee" label everywhere; two typing are named."""
    base = live_server.url
    rural_user = make.rural(name="Dr Ma Xiaoli")
    specialist_user = make.specialist(name="Dr Zhou Wei")
    consult = make.scheduled(rural_user, specialist_user, chief_complaint="Sudden weakness of the left arm")
    trainee_user = make.trainee(consult, name="Dr Wu Jie")
    ref = consult.ref
    watch = Watch()
    contexts = [browser.new_context(viewport=DESKTOP, locale="en-GB"),
                browser.new_context(viewport=DESKTOP, locale="en-GB"),
                browser.new_context(viewport=PHONE, locale="en-GB", is_mobile=True, has_touch=True)]
    for ctx in contexts:
        ctx.set_default_timeout(20_000)
    rural, lead, trainee = (watch.page(ctx, who) for ctx, who in zip(contexts, ("rural", "lead", "trainee"),
                                                                       strict=True))
    try:
        sign_in_and_open_room(rural, base, rural_user.email, ref)
        sign_in_and_open_room(lead, base, specialist_user.email, ref)
        say(rural, "Onset 2 hours ago, NIHSS 7.")
        seen = rural.locator("#messages .msg.mine .seen").last
        expect(seen).to_have_text("Seen by Dr Zhou Wei")  # one reader: the two-party wording

        sign_in_and_open_room(trainee, base, trainee_user.email, ref)
        expect(bodies(trainee)).to_have_text(["Onset 2 hours ago, NIHSS 7."])
        expect(seen.locator(".seen-count")).to_have_text("Seen by 2")
        expect(seen).to_have_attribute("title", "Seen by Dr Zhou Wei and Dr Wu Jie")
        expect(seen.locator(".seen-names")).to_have_text("Seen by Dr Zhou Wei and Dr Wu Jie")  # screen readers
        expect(rural.locator("#people li .person-name")).to_have_text(
            ["Dr Ma Xiaoli (you)", "Dr Zhou Wei", "Dr Wu Jie"]
        )
        expect(rural.locator("#people li .role")).to_have_text(["Requesting doctor", "Lead specialist", "Trainee"])

        say(trainee, "Why not thrombolysis first?")
        for page in (rural, lead, trainee):
            question = page.locator("#messages .msg").last
            expect(question.locator(".body")).to_have_text("Why not thrombolysis first?")
            expect(question.locator(".trainee-label")).to_have_text("Trainee")
        expect(rural.locator("#messages .msg").first.locator(".trainee-label")).to_have_count(0)

        # two people typing at once are both named
        lead.get_by_role("textbox", name="Message").press_sequentially("Bec", delay=20)
        trainee.get_by_role("textbox", name="Message").press_sequentially("And", delay=20)
        expect(rural.locator("#typing")).to_have_text("Dr Zhou Wei and Dr Wu Jie are typing…")

        # the trainee reads the notes live but cannot type in them
        trainee.locator("#room-tab-notes").click()
        expect(trainee.locator("textarea[data-section=assessment]")).to_be_visible()
        expect(trainee.locator("textarea[data-section=assessment]")).not_to_be_editable()
        lead.locator("textarea[data-section=assessment]").click()
        lead.keyboard.type("Likely right MCA stroke.", delay=5)
        expect(trainee.locator("textarea[data-section=assessment]")).to_have_value("Likely right MCA stroke.")
        trainee.locator("#room-tab-chat").click()

        seen.focus()  # keyboard focus shows the names as hovering does
        expect(seen.locator(".seen-names")).to_be_visible()
        expect(seen.locator(".seen-count")).to_be_hidden()
        rural.screenshot(path=str(shots / "room-many-rural.png"), full_page=True)
        trainee.screenshot(path=str(shots / "room-many-trainee-phone.png"), full_page=True)
        rural.set_viewport_size(PHONE)
        rural.locator("#room-tab-chat").click()
        rural.screenshot(path=str(shots / "room-many-rural-phone.png"), full_page=True)
        assert watch.problems == []
    finally:
        for ctx in contexts:
            ctx.close()
