"""The coordinator's audit log page and its CSV export, over HTTP (issue 10, "Saying the right thing")."""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import UTC, datetime

from sqlalchemy import select

from tests import test_http_consults
from tests.test_http_consults import reread, text, user_client
from webapp.audit.services import record
from webapp.extensions import db
from webapp.models import AuditEvent

people = test_http_consults.people  # the fixture: a rural doctor, a cardiologist, a coordinator


def rows_of(response) -> list[str]:
    body = response.get_data(as_text=True)
    tbody = body.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", tbody, re.S)


def at(when: datetime, action: str, **kw) -> AuditEvent:
    """An audit entry written at a given time (the log is append-only: the time is set before it is stored)."""
    event = record(action, **kw)
    event.at = when
    db.session.commit()
    return event


def csv_rows(response) -> list[list[str]]:
    data = response.get_data(as_text=True)
    assert data.startswith("\ufeff")
    return list(csv.reader(io.StringIO(data[1:])))


def test_the_log_reads_in_words_with_the_consult_named_and_linked(app, people, make):
    requester, specialist, coordinator = people
    c = make.requested(requester, chief_complaint="Chest tightness on exertion")
    doctor = user_client(app, requester)
    assert doctor.get(f"/consults/{c.ref}").status_code == 200
    at(datetime(2026, 3, 1, 23, 30, 5, tzinfo=UTC), "consult.declined", actor=specialist, consult=c,
       detail={"reason": "Out of my field: " + "this needs a paediatric cardiologist. " * 6})

    page = user_client(app, coordinator).get("/admin/audit")
    assert page.status_code == 200
    body = text(page)
    raw = page.get_data(as_text=True)
    # Labels, not codes (the code stays available as the label's title).
    assert "Consult viewed" in body and "Request sent" in body and "Signed in" in body
    assert ">consult.viewed<" not in raw and "<code>" not in raw
    # The consult by its title, linked to it; never "#<id>".
    assert f'href="/consults/{c.ref}">Chest tightness on exertion</a>' in raw
    assert f"#{c.id}<" not in raw
    # Timestamps: one line, in the coordinator's zone (Asia/Shanghai is UTC+8), zone named once above.
    assert "Times in Asia/Shanghai" in body
    assert re.search(r'<td class="small nowrap" data-label="When">'
                     r'<time datetime="2026-03-01T23:30:05[^"]*">2026-03-02 07:30:05</time>',
                     raw)
    # Details as "key: value", whole (not cut off), folded behind a disclosure when long; no JSON.
    assert "<details><summary>reason: Out of my field" in raw
    assert "this needs a paediatric cardiologist. " * 6 in body
    assert '{"' not in body
    declined = next(r for r in rows_of(page) if "Request declined" in r)
    assert "<dt>reason</dt>" in declined
    # Ids read as names: the specialists a request was offered to, the account an action was about.
    sent = next(r for r in rows_of(page) if "Request sent" in r)
    assert f"<dt>offered to</dt><dd>{specialist.full_name}</dd>" in sent
    at(datetime(2026, 3, 3, tzinfo=UTC), "account.suspended", actor=coordinator, target=f"user:{requester.id}",
       detail={"reason": "Left the county hospital"})
    page = user_client(app, coordinator).get("/admin/audit?action=account.suspended")
    (suspended,) = rows_of(page)
    assert f'title="user:{requester.id}">{requester.full_name}</div>' in suspended


def test_filters_by_date_user_consult_and_action(app, people, make):
    requester, specialist, coordinator = people
    c = make.requested(requester, chief_complaint="First case")
    other = make.requested(requester, chief_complaint="Second case")
    at(datetime(2026, 3, 1, 15, 0, tzinfo=UTC), "consult.viewed", actor=requester, consult=c)  # 23:00 on 1 March
    at(datetime(2026, 3, 1, 17, 0, tzinfo=UTC), "consult.viewed", actor=requester, consult=c)  # 01:00 on 2 March
    at(datetime(2026, 3, 2, 15, 59, tzinfo=UTC), "consult.viewed", actor=specialist, consult=c)  # 23:59 on 2 March
    at(datetime(2026, 3, 2, 16, 0, tzinfo=UTC), "consult.viewed", actor=requester, consult=other)  # 00:00 on 3 March
    coord = user_client(app, coordinator)

    def shown(query: str) -> list[str]:
        r = coord.get(f"/admin/audit?{query}")
        assert r.status_code == 200, query
        return [html.unescape(re.search(r"<time [^>]*>(.*?)</time>", row).group(1)) for row in rows_of(r)
                if "<time" in row]

    assert shown("date_from=2026-03-02&date_to=2026-03-02") == ["2026-03-02 23:59:00", "2026-03-02 01:00:00"]
    assert shown(f"date_from=2026-03-01&date_to=2026-03-02&user={requester.id}") == [
        "2026-03-02 01:00:00", "2026-03-01 23:00:00"]
    assert shown(f"date_from=2026-03-01&date_to=2026-03-03&consult={other.ref}") == ["2026-03-03 00:00:00"]
    assert len(shown(f"action=consult.viewed&consult={c.ref}")) == 3
    assert shown(f"action=consult.submitted&consult={c.ref}&user={specialist.id}") == []
    r = coord.get(f"/admin/audit?action=consult.submitted&user={requester.id}")
    assert [t for t in rows_of(r) if "Request sent" in t] and len(rows_of(r)) == 2
    # The filter form offers the actions by label, and keeps what was chosen.
    r = coord.get(f"/admin/audit?action=consult.viewed&user={requester.id}")
    assert '<option selected value="consult.viewed">Consult viewed</option>' in r.get_data(as_text=True)

    # Bad filters are said at their field, with a 422, never a 500.
    r = coord.get("/admin/audit?date_from=yesterday")
    assert r.status_code == 422 and "Not a valid date value." in text(r)
    r = coord.get("/admin/audit?date_from=2026-03-05&date_to=2026-03-01")
    assert r.status_code == 422 and "The end date is before the start date." in text(r)
    assert coord.get("/admin/audit?action=no.such_action").status_code == 422
    # The ends of the calendar are read, not overflowed.
    assert len(shown("date_from=0001-01-01&date_to=9999-12-31&action=consult.viewed")) == 4
    assert coord.get("/admin/audit.csv?date_from=0001-01-01&date_to=9999-12-31").status_code == 200
    assert coord.get("/admin/audit?user=abc").status_code == 422


def test_pages_keep_the_filter(app, people, make):
    requester, _, coordinator = people
    c = make.requested(requester)
    for n in range(120):
        at(datetime(2026, 3, 1, 8, 0, n % 60, tzinfo=UTC), "consult.viewed", actor=requester, consult=c)
    coord = user_client(app, coordinator)
    first = coord.get("/admin/audit?action=consult.viewed")
    raw = first.get_data(as_text=True)
    assert len(rows_of(first)) == 50 and "Page 1 of 3" in raw
    assert 'href="/admin/audit?page=2&amp;action=consult.viewed" rel="next"' in raw
    last = coord.get("/admin/audit?action=consult.viewed&page=3")
    assert len(rows_of(last)) == 20 and "Page 3 of 3" in last.get_data(as_text=True)
    beyond = coord.get("/admin/audit?action=consult.viewed&page=99")
    assert beyond.status_code == 200 and "Page 3 of 3" in beyond.get_data(as_text=True)
    assert coord.get("/admin/audit?page=abc").status_code == 200


def test_csv_export_of_the_filtered_rows_is_escaped_and_audited(app, people, make):
    requester, specialist, coordinator = people
    c = make.requested(requester, chief_complaint="=HYPERLINK(\"http://evil.example\",\"x\")")
    at(datetime(2026, 3, 1, 15, 0, tzinfo=UTC), "consult.declined", actor=specialist, consult=c,
       detail={"reason": "-2+3 outside my field"})
    at(datetime(2026, 3, 1, 16, 0, tzinfo=UTC), "auth.login_failed", detail={"email": "@SUM(1+1)"})
    at(datetime(2026, 3, 5, 0, 0, tzinfo=UTC), "consult.viewed", actor=requester, consult=c)  # outside the dates
    coord = user_client(app, coordinator)

    r = coord.get("/admin/audit.csv?date_from=2026-03-01&date_to=2026-03-02")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert r.headers["Content-Disposition"].startswith('attachment; filename="huizhen-audit-')
    rows = csv_rows(r)
    assert rows[0] == ["Time (UTC)", "Time (Asia/Shanghai)", "User", "User email", "Role", "Action",
                       "Action code", "Consult", "Consult reference", "Target", "Address", "Details"]
    body = rows[1:]
    assert [row[6] for row in body] == ["consult.declined", "auth.login_failed"]  # oldest first, filtered
    declined, failed = body
    assert declined[0] == "2026-03-01 15:00:00" and declined[1] == "2026-03-01 23:00:00"
    assert declined[2] == specialist.full_name and declined[3] == specialist.email and declined[4] == "Specialist"
    assert declined[5] == "Request declined"
    # A random reference may start with "-" (1 in 64): it is escaped like any other such cell.
    assert declined[7] == "'=HYPERLINK(\"http://evil.example\",\"x\")"
    assert declined[8] == ("'" + c.ref if c.ref[:1] in "=+-@" else c.ref)
    assert declined[11] == "reason: -2+3 outside my field"
    assert failed[2] == "" and failed[5] == "Sign-in failed" and failed[11] == "email: @SUM(1+1)"
    for row in body:  # no cell can start a formula
        assert all(cell[:1] not in ("=", "+", "-", "@") for cell in row), row

    reread()
    exported = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "audit.exported")).all()
    assert len(exported) == 1
    assert exported[0].actor_id == coordinator.id
    assert exported[0].detail == {"filter": {"date_from": "2026-03-01", "date_to": "2026-03-02"}, "rows": 2}

    # A cell that starts with a sign is escaped wherever it comes from (the details too).
    r = coord.get(f"/admin/audit.csv?user={specialist.id}&action=consult.declined")
    assert [row[11] for row in csv_rows(r)[1:]] == ["reason: -2+3 outside my field"]
    at(datetime(2026, 3, 1, 15, 0, tzinfo=UTC), "consult.cancelled", actor=requester, consult=c,
       detail={"reason": "x"}, target="+1 555")
    r = coord.get("/admin/audit.csv?action=consult.cancelled")
    assert csv_rows(r)[1][9] == "'+1 555"

    assert coord.get("/admin/audit.csv?date_from=bad").status_code == 422
    for user in (requester, specialist):
        assert user_client(app, user).get("/admin/audit.csv").status_code == 403
    reread()
    assert len(db.session.scalars(select(AuditEvent).where(AuditEvent.action == "audit.exported")).all()) == 3
