"""The bell in headless Chromium: the specialist's count goes up, without reload, when a rural doctor
sends a request in another browser; the tab title shows it; the list links to the request.
Screenshots: test-artifacts/notify-*.png.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.test_room_chat import DESKTOP
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


def sign_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_the_specialists_bell_counts_up_when_a_request_is_sent_elsewhere(browser: Browser, live_server, make,
                                                                          shots):
    rural_user, spec_user = make.rural(name="Dr Ma Xiaoli"), make.specialist(name="Dr Zhang Wei")
    draft = make.draft(rural_user)
    spec_ctx, rural_ctx = browser.new_context(viewport=DESKTOP), browser.new_context(viewport=DESKTOP)
    for ctx in (spec_ctx, rural_ctx):
        ctx.set_default_timeout(30_000)
    spec, rural = spec_ctx.new_page(), rural_ctx.new_page()
    try:
        sign_in(spec, live_server.url, spec_user.email)
        expect(spec.locator("#notify-count")).to_be_hidden()
        spec.wait_for_function("() => window.huizhenNotify && window.huizhenNotify.connected")
        spec.evaluate("window.loadedOnce = true")  # gone if the page reloads
        sign_in(rural, live_server.url, rural_user.email)
        rural.goto(f"{live_server.url}/consults/{draft.ref}")
        rural.get_by_role("button", name="Send request").click()
        expect(spec.locator("#notify-count")).to_have_text("1")
        expect(spec).to_have_title("(1) My consults · Huizhen 会诊")
        assert spec.evaluate("window.loadedOnce") is True
        spec.screenshot(path=str(shots / "notify-bell.png"))
        spec.locator("#notify-bell").click()
        link = spec.get_by_role("link", name="New urgent request in cardiology offered to you")
        expect(link).to_have_attribute("href", f"/consults/{draft.ref}")
        spec.screenshot(path=str(shots / "notify-list.png"))
        spec.get_by_role("button", name="Mark all read").click()
        expect(spec.locator("#notify-count")).to_be_hidden()
    finally:
        spec_ctx.close()
        rural_ctx.close()
