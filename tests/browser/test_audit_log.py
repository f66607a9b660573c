"""The coordinator's audit log in headless Chromium: readable, filterable, exportable (issue 10)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from webapp.audit.services import record
from webapp.consults import services as consults
from webapp.extensions import db

pytestmark = pytest.mark.browser


def test_audit_log_page_reads_filters_and_exports(browser, live_server, make, shots):
    requester = make.rural(name="Dr Li Wei")
    specialist = make.specialist(name="Dr Anna Smith")
    coordinator = make.coordinator(name="Coordinator Wang")
    c = make.requested(requester, chief_complaint="Chest tightness on exertion")
    consults.view_consult(requester, c.ref)
    event = record("consult.declined", actor=specialist, consult=c, detail={
        "reason": "Needs a paediatric cardiologist: " + "the child is four and the findings suggest a "
                  "congenital lesion that I do not see in adult practice. " * 3})
    event.at = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    db.session.commit()

    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/login")
        page.get_by_label("Email").fill(coordinator.email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("button", name="Sign out")).to_be_visible(timeout=30_000)
        page.goto(f"{live_server.url}/admin/audit")
        expect(page.get_by_role("heading", name="Audit log")).to_be_visible(timeout=30_000)

        row = page.locator("table.audit-log tbody tr", has_text="Request declined")
        expect(row).to_have_count(1)
        expect(row.get_by_role("link", name="Chest tightness on exertion")).to_have_attribute(
            "href", f"/consults/{c.ref}")
        # The time fits on one line, in the coordinator's zone.
        when = row.locator("time")
        expect(when).to_have_text("2026-03-02 07:30:00")
        line = when.evaluate("t => parseFloat(getComputedStyle(t).lineHeight) || t.getBoundingClientRect().height")
        assert when.bounding_box()["height"] < 1.6 * line
        # The long reason is folded, and opens whole.
        expect(row.get_by_text("congenital lesion").first).to_be_hidden()
        page.screenshot(path=str(shots / "audit-log-01-list.png"), full_page=True)
        row.locator("summary").click()
        expect(row.locator("dd")).to_contain_text("I do not see in adult practice. " * 1)
        page.screenshot(path=str(shots / "audit-log-02-detail-open.png"), full_page=True)

        # Filter by user and action with the form.
        page.get_by_label("User").select_option(label=f"{specialist.full_name} ({specialist.email})")
        page.get_by_label("Action").select_option(label="Request declined")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("table.audit-log tbody tr")).to_have_count(1, timeout=30_000)
        expect(page.get_by_text("1 entry matches")).to_be_visible()
        page.screenshot(path=str(shots / "audit-log-03-filtered.png"), full_page=True)

        # Export what is shown.
        with page.expect_download(timeout=30_000) as info:
            page.get_by_role("link", name="Export CSV").click()
        path = info.value.path()
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
        assert len(rows) == 2 and rows[1][5] == "Request declined" and rows[1][8] == c.ref
    finally:
        context.close()
