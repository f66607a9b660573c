"""Two rural doctors choose the same time of one specialist, in headless Chromium (static/js/book.js).

The first books it and goes to the consult. The second, whose page still offers that time, clicks a
moment later: the page is not reloaded; it says the time was just booked (in its status area, an
aria-live region), lists the times still open without that one, and lets the doctor book another.
At a desktop width and at 390 px, and in Chinese at 390 px. Screenshots: test-artifacts/book-race-*.png.
"""

from __future__ import annotations

import pytest
from flask_babel import force_locale
from flask_babel import gettext as _
from playwright.sync_api import expect

from tests.browser.conftest import collecting_errors
from tests.conftest import PASSWORD
from webapp.extensions import db

pytestmark = pytest.mark.browser

TAKEN = "That time has just been booked for another consult. Choose another time."
BOOKED = "The consultation time is booked."
BOOK = "form[data-slot-form] button[type=submit]"


def _doctor_page(browser, base: str, email: str, ref: str, width: int, path: str = "book"):
    context = browser.new_context(viewport={"width": width, "height": 900 if width > 600 else 844})
    context.set_default_timeout(20_000)
    page = collecting_errors(context.new_page())
    page.goto(f"{base}/login")  # the form, in whichever language the page speaks
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
    page.goto(f"{base}/consults/{ref}/{path}")
    expect(page.locator("form[data-slot-form] ul.slots")).to_be_visible()
    return context, page


@pytest.mark.parametrize(("width", "locale"), [(1280, "en"), (390, "en"), (390, "zh_CN")],
                         ids=["desktop", "phone", "phone-zh"])
def test_the_second_doctor_is_told_at_once_and_offered_the_times_still_open(app, browser, live_server, make, shots,
                                                                          width, locale):
    specialist = make.specialist()
    make.availability(specialist, (8, 18))
    first_doctor, second_doctor = make.rural(), make.rural()
    second_doctor.locale = locale
    db.session.commit()
    with app.test_request_context(), force_locale(locale):
        taken_text, booked_text = _(TAKEN), _(BOOKED)
    name = f"{width}" if locale == "en" else f"{width}-zh"
    first, second = make.accepted(first_doctor, specialist), make.accepted(second_doctor, specialist)
    first_ref, second_ref = first.ref, second.ref
    ctx_a, page_a = _doctor_page(browser, live_server.url, first_doctor.email, first_ref, 1280)
    ctx_b, page_b = _doctor_page(browser, live_server.url, second_doctor.email, second_ref, width)
    try:
        values = page_b.locator("ul.slots input[name=slot]").evaluate_all("els => els.map(e => e.value)")
        taken = values[1]  # not the first: it may fall inside the booking lead time while the test runs
        assert len(values) > 3

        page_a.locator(f'input[name=slot][value="{taken}"]').check()
        page_a.locator(BOOK).click()
        page_a.wait_for_url(f"**/consults/{first_ref}")
        expect(page_a.locator(".flash.success")).to_have_text(BOOKED)

        page_b.evaluate("window.notReloaded = true")
        choice = page_b.locator(f'input[name=slot][value="{taken}"]')
        choice.check()
        with page_b.expect_response(lambda r: r.url.endswith(f"/consults/{second_ref}/open-slots")) as listing:
            page_b.locator(BOOK).click()
        assert listing.value.status == 200
        status = page_b.locator("#slot-status")
        expect(status.locator(".flash.error")).to_have_text(taken_text)
        assert status.get_attribute("aria-live") == "polite"
        expect(page_b.locator(f'input[name=slot][value="{taken}"]')).to_have_count(0)
        expect(page_b.locator("ul.slots input[name=slot]")).to_have_count(len(values) - 1)
        expect(page_b.locator(BOOK)).to_be_enabled()
        assert page_b.evaluate("window.notReloaded") is True, "the page was reloaded"
        assert page_b.url.endswith(f"/consults/{second_ref}/book")
        page_b.screenshot(path=str(shots / f"book-race-refused-{name}.png"), full_page=False)

        # another of the listed times books, and the page goes to the consult
        page_b.locator(f'input[name=slot][value="{values[3]}"]').check()
        page_b.locator(BOOK).click()
        page_b.wait_for_url(f"**/consults/{second_ref}")
        expect(page_b.locator(".flash.success")).to_have_text(booked_text)
        page_b.screenshot(path=str(shots / f"book-race-booked-{name}.png"), full_page=False)
        assert page_a.errors == [] and page_b.errors == []
    finally:
        ctx_a.close()
        ctx_b.close()


def test_no_answer_is_said_and_the_button_comes_back(browser, live_server, make, shots):
    specialist = make.specialist()
    make.availability(specialist, (8, 18))
    doctor = make.rural()
    ref = make.accepted(doctor, specialist).ref
    context, page = _doctor_page(browser, live_server.url, doctor.email, ref, 1280)
    try:
        page.route(f"**/consults/{ref}/book",
                   lambda route: route.abort() if route.request.method == "POST" else route.continue_())
        page.evaluate("window.notReloaded = true")
        page.locator("ul.slots input[name=slot]").nth(1).check()
        page.locator(BOOK).click()
        expect(page.locator("#slot-status .flash.error")).to_have_text(
            "No answer from Huizhen: the connection may be down. Check it and try again.")
        expect(page.locator(BOOK)).to_be_enabled()
        assert page.evaluate("window.notReloaded") is True
        page.screenshot(path=str(shots / "book-race-no-answer-1280.png"), full_page=False)
        assert page.errors == []
    finally:
        context.close()


def test_moving_to_a_time_just_taken_keeps_the_typed_reason(browser, live_server, make, shots):
    """The reschedule page shares the script: the refusal is said, the list rewritten, the reason kept."""
    specialist = make.specialist()
    make.availability(specialist, (8, 18))
    doctor, other = make.rural(), make.rural()
    ref = make.scheduled(doctor, specialist).ref
    other_ref = make.accepted(other, specialist).ref
    context, page = _doctor_page(browser, live_server.url, doctor.email, ref, 1280, path="reschedule")
    other_context, other_page = _doctor_page(browser, live_server.url, other.email, other_ref, 1280)
    try:
        values = page.locator("ul.slots input[name=slot]").evaluate_all("els => els.map(e => e.value)")
        taken = values[2]
        other_page.locator(f'input[name=slot][value="{taken}"]').check()  # the other doctor takes it first
        other_page.locator(BOOK).click()
        other_page.wait_for_url(f"**/consults/{other_ref}")

        page.evaluate("window.notReloaded = true")
        page.locator(f'input[name=slot][value="{taken}"]').check()
        page.get_by_label("Reason").fill("The clinic's ultrasound day moved.")
        page.get_by_role("button", name="Move to this time").click()
        expect(page.locator("#slot-status .flash.error")).to_have_text(TAKEN)
        expect(page.locator(f'input[name=slot][value="{taken}"]')).to_have_count(0)
        expect(page.get_by_label("Reason")).to_have_value("The clinic's ultrasound day moved.")
        assert page.evaluate("window.notReloaded") is True
        page.screenshot(path=str(shots / "book-race-reschedule-refused-1280.png"), full_page=False)
        page.locator(f'input[name=slot][value="{values[4]}"]').check()
        page.get_by_role("button", name="Move to this time").click()
        page.wait_for_url(f"**/consults/{ref}")
        expect(page.locator(".flash.success")).to_have_text("The consultation has a new time.")
        assert page.errors == [] and other_page.errors == []
    finally:
        context.close()
        other_context.close()
