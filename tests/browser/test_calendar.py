"""Availability and the accept page in headless Chromium (issue 12)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from webapp.demo import WORKDAY_WINDOWS
from webapp.extensions import db
from webapp.scheduling import services as scheduling

pytestmark = pytest.mark.browser


def sign_in(page, base: str, email: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible(timeout=30_000)


def test_availability_keeps_21_windows_and_adds_a_row(browser, live_server, make, shots):
    specialist = make.specialist(name="Dr Zhang Min")
    scheduling.set_availability(specialist, WORKDAY_WINDOWS)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        sign_in(page, live_server.url, specialist.email)
        page.goto(f"{live_server.url}/availability")
        rows = page.locator("form.card tbody tr")
        expect(rows).to_have_count(23, timeout=30_000)  # 21 windows and two empty lines
        page.get_by_role("button", name="Save availability").click()
        expect(page.get_by_text("Your availability is saved.")).to_be_visible(timeout=30_000)
        db.session.rollback()  # end the test thread's read snapshot: see what the server committed
        assert len(scheduling.windows_of(specialist)) == 21

        page.get_by_role("button", name="Add a row").click()
        expect(page.locator("form.card tbody tr")).to_have_count(24, timeout=30_000)
        page.locator("form.card tbody tr").nth(0).get_by_label("Remove this line").check()
        page.screenshot(path=str(shots / "availability.png"), full_page=True)
        page.get_by_role("button", name="Save availability").click()
        expect(page.get_by_text("Your availability is saved.")).to_be_visible(timeout=30_000)
        db.session.rollback()  # end the test thread's read snapshot: see what the server committed
        assert len(scheduling.windows_of(specialist)) == 20
    finally:
        context.close()


def test_accept_page_groups_slots_by_day(browser, live_server, make, shots):
    requester = make.rural(name="Dr Li Wei", timezone="Europe/Berlin")
    specialist = make.specialist(name="Dr Zhang Min")
    scheduling.set_availability(specialist, WORKDAY_WINDOWS)
    consult = make.requested(requester, preferred_times="weekday mornings")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        sign_in(page, live_server.url, specialist.email)
        page.goto(f"{live_server.url}/consults/{consult.ref}/accept")
        expect(page.locator("details.slot-day").first).to_be_visible(timeout=30_000)
        assert page.locator("details.slot-day").count() >= 13
        assert page.locator("li.fits").count() > 0
        page.screenshot(path=str(shots / "accept_by_day.png"), full_page=True)
        page.locator("li.fits input").first.check()
        page.get_by_role("button", name="Accept consult").click()
        expect(page.get_by_text("The time is booked.")).to_be_visible(timeout=30_000)
    finally:
        context.close()
