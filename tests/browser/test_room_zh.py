"""The consult room's scripts in Chinese: two doctors whose setting is zh_CN see the words that
static/js/room.js, live.js and notes.js write through t() — the connection state, the other doctor's
presence, the typing indicator, the "Seen by" receipt, the case notes' status — in the zh_CN "js"
catalog's words, and chat times as HZ.fmtTime writes them (24-hour, the viewer's zone from <html data-tz>).

The expected texts are read from webapp.i18n.js_catalog("zh_CN") (the compiled catalog, built by
`make translations` from the .po files the fragments are absorbed into), never written here.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import PASSWORD
from webapp.extensions import db
from webapp.i18n import js_catalog

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("generous_chat")]

DESKTOP = {"width": 1280, "height": 900}
USED = ("%(name)s (you)", "Seen by %(name)s", "%(name)s is typing…",
        "Connection lost — reconnecting. Messages you write will be sent when it is back.",
        "Connection restored. Messages are up to date.", "You", "All changes saved")


def zh(catalog: dict[str, str], msgid: str, **params: str) -> str:
    """The Chinese text the page shows for a msgid, its %(name)s parameters filled in."""
    text = catalog[msgid]
    return text % params if params else text


def sign_in_and_open_room(page: Page, base: str, email: str, ref: str) -> None:
    # the login page speaks the browser's language (en-GB here); the room, the user's own (zh_CN)
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signout-form")).to_be_attached()
    page.goto(f"{base}/consults/{ref}/room")
    page.wait_for_function("() => window.huizhenRoom && window.huizhenRoom.state().joined")


def say(page: Page, text: str) -> None:
    box = page.locator("#chat-input")
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def test_two_doctors_in_chinese_see_the_rooms_words_in_chinese(browser: Browser, live_server, make, app):
    catalog = js_catalog("zh_CN")
    missing = [m for m in USED if not catalog.get(m)]
    assert not missing, f"not in the compiled zh_CN js catalog (make translations): {missing}"

    base = live_server.url
    rural_user = make.rural(name="马晓丽")
    specialist_user = make.specialist(name="周伟")
    for user in (rural_user, specialist_user):
        user.locale = "zh_CN"
    db.session.commit()
    ref = make.scheduled(rural_user, specialist_user, chief_complaint="活动后胸闷").ref

    problems: list[str] = []
    contexts = [browser.new_context(viewport=DESKTOP, locale="en-GB", timezone_id="Europe/London")
                for _ in range(2)]
    try:
        pages = []
        for ctx, who in zip(contexts, ("rural", "specialist"), strict=True):
            ctx.set_default_timeout(15_000)
            page = ctx.new_page()
            page.on("pageerror", lambda exc, who=who: problems.append(f"{who} page error: {exc}"))
            page.on("dialog", lambda dialog, who=who: (problems.append(f"{who} dialog: {dialog.message}"),
                                                        dialog.dismiss()))
            pages.append(page)
        rural, spec = pages
        spec_ctx = contexts[1]
        sign_in_and_open_room(rural, base, rural_user.email, ref)
        sign_in_and_open_room(spec, base, specialist_user.email, ref)
        for page in (rural, spec):
            assert page.evaluate("() => document.documentElement.lang") == "zh-CN"
            assert page.evaluate("() => document.documentElement.dataset.tz") == "Asia/Shanghai"

        # presence: each sees both, their own name marked in Chinese
        expect(rural.locator("#people li .person-name")).to_have_text(
            [zh(catalog, "%(name)s (you)", name="马晓丽"), "周伟"])
        expect(spec.locator("#people li .person-name")).to_have_text(
            ["马晓丽", zh(catalog, "%(name)s (you)", name="周伟")])

        # typing, in Chinese
        spec.locator("#chat-input").press_sequentially("心电", delay=20)
        expect(rural.locator("#typing")).to_have_text(zh(catalog, "%(name)s is typing…", name="周伟"))

        # a message and its receipt: "Seen by" in Chinese under the sender's message
        say(rural, "心电图已上传到病例中。")
        expect(spec.locator("#messages .msg .body")).to_have_text(["心电图已上传到病例中。"])
        expect(rural.locator("#messages .msg.mine .seen").last).to_have_text(
            zh(catalog, "Seen by %(name)s", name="周伟"))
        expect(rural.locator("#messages .msg.mine .meta span").first).to_have_text(zh(catalog, "You"))

        # the chat time: 24-hour, in the viewer's zone (Asia/Shanghai), not the browser's (London)
        shown = rural.locator("#messages .msg[data-seq] .meta span").last.inner_text()
        assert re.fullmatch(r"\d{2}:\d{2}", shown), shown
        # (the hour of the message or of a minute later: the clock may cross an hour meanwhile)
        hours = rural.evaluate(
            """zone => [0, 60000].map(late => new Intl.DateTimeFormat('zh-CN', {hour: '2-digit', hour12: false,
                 timeZone: zone}).format(new Date(Date.now() - late)).slice(0, 2))""", "Asia/Shanghai")
        london = rural.evaluate(
            """() => new Intl.DateTimeFormat('zh-CN', {hour: '2-digit', hour12: false,
                 timeZone: 'Europe/London'}).format(new Date()).slice(0, 2)""")
        assert shown[:2] in hours and shown[:2] != london, (shown, hours, london)

        # the connection state: lost, then restored, in Chinese
        spec_ctx.set_offline(True)
        banner = spec.locator("#conn-banner")
        expect(banner).to_have_text(
            zh(catalog, "Connection lost — reconnecting. Messages you write will be sent when it is back."))
        expect(rural.locator("#people li .person-name")).to_have_text([zh(catalog, "%(name)s (you)", name="马晓丽")])
        spec_ctx.set_offline(False)
        expect(banner).to_have_text(zh(catalog, "Connection restored. Messages are up to date."))
        expect(rural.locator("#people li")).to_have_count(2)

        # the shared case notes' status (static/js/notes.js), once the editor has started
        spec.locator("#notes").dispatch_event("pointerdown")
        spec.wait_for_function("() => window.huizhenNotes && window.huizhenNotes.state().joined", timeout=20_000)
        expect(spec.locator("#notes .notes-status")).to_have_text(zh(catalog, "All changes saved"))
        assert not problems, problems
    finally:
        for ctx in contexts:
            ctx.close()
