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


def test_the_rural_doctor_on_the_dashboard_sees_the_specialist_waiting_and_joins_in_one_click(
        browser: Browser, live_server, make, shots):
    from datetime import timedelta

    from tests.browser.test_room_chat import sign_in_and_open_room, wait_joined
    from webapp.extensions import db
    from webapp.models import utcnow

    rural_user, spec_user = make.rural(name="Dr Ma Xiaoli"), make.specialist(name="Dr Zhang Wei")
    consult = make.scheduled(rural_user, spec_user)
    consult.appointment.starts_at = utcnow() + timedelta(minutes=5)  # the call is about to start
    consult.appointment.ends_at = utcnow() + timedelta(minutes=35)
    db.session.commit()
    rural_ctx, spec_ctx = browser.new_context(viewport=DESKTOP), browser.new_context(viewport=DESKTOP)
    for ctx in (spec_ctx, rural_ctx):
        ctx.set_default_timeout(30_000)
    rural, spec = rural_ctx.new_page(), spec_ctx.new_page()
    try:
        sign_in(rural, live_server.url, rural_user.email)
        rural.wait_for_function("() => window.huizhenNotify && window.huizhenNotify.connected")
        sign_in_and_open_room(spec, live_server.url, spec_user.email, consult.ref)
        waiting = rural.get_by_role("link", name="Dr Zhang Wei is waiting in the consult room")
        expect(waiting).to_be_visible()
        rural.screenshot(path=str(shots / "notify-waiting.png"))
        waiting.click()
        rural.wait_for_url(f"{live_server.url}/consults/{consult.ref}/room")
        wait_joined(rural)
    finally:
        rural_ctx.close()
        spec_ctx.close()
