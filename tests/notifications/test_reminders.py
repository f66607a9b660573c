"""Reminders before a booked time and missed response targets, with a controlled clock (scan_due(now))."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from tests.conftest import Factory, build_postgres_app, login, post_form, truncate_all
from tests.notifications.conftest import notifications_of
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import Appointment, Consult, Urgency, User
from webapp.notifications import texts
from webapp.notifications.reminders import scan_due
from webapp.scheduling import services as scheduling

MIN = timedelta(minutes=1)


def _booked_long_ago(consult: Consult, starts_at: datetime | None = None) -> Appointment:
    """The consult's live appointment, as if booked days before (optionally at another time)."""
    appt = consult.appointment
    values: dict = {}
    if starts_at is not None:
        values |= {"starts_at": starts_at, "ends_at": starts_at + (appt.ends_at - appt.starts_at)}
    start = values.get("starts_at", appt.starts_at)
    values["created_at"] = start - timedelta(days=3)
    db.session.execute(update(Appointment).where(Appointment.id == appt.id).values(values))
    db.session.commit()
    db.session.expire_all()
    return db.session.get(Appointment, appt.id)


def _count(user, kind: str) -> int:
    return len(notifications_of(user, kind))


def test_each_reminder_fires_once_at_its_time_and_not_before(make):
    rural, spec = make.rural(), make.specialist()
    appt = _booked_long_ago(make.scheduled(rural, spec))
    starts = appt.starts_at
    assert scan_due(starts - timedelta(hours=24) - MIN) == {}
    assert scan_due(starts - timedelta(hours=24)) == {"reminder.day": 1}
    assert scan_due(starts - timedelta(hours=24)) == {}
    assert scan_due(starts - timedelta(hours=2)) == {}
    assert (_count(rural, "reminder.day"), _count(spec, "reminder.day")) == (1, 1)
    assert scan_due(starts - timedelta(minutes=16)) == {}
    assert scan_due(starts - timedelta(minutes=15)) == {"reminder.soon": 1}
    assert scan_due(starts - timedelta(minutes=5)) == {}
    assert scan_due(starts + MIN) == {}
    assert (_count(rural, "reminder.soon"), _count(spec, "reminder.soon")) == (1, 1)
    note = notifications_of(spec, "reminder.soon")[0]
    assert note.urgent and note.params == {"starts_at": starts.isoformat()}
    assert note.kind in texts.ROOM_KINDS  # one click from the reminder joins the room


def test_a_rescheduled_booking_is_reminded_again_for_its_new_time(make):
    rural, spec = make.rural(), make.specialist()
    consult = make.scheduled(rural, spec)
    old = _booked_long_ago(consult)
    assert scan_due(old.starts_at - timedelta(hours=24)) == {"reminder.day": 1}
    new_start = next(s.starts_at for s in scheduling.open_slots(spec) if s.starts_at > old.ends_at + timedelta(hours=1))
    consult = consults.reschedule(rural, consult.ref, new_start, "Clinic overrun")
    new = _booked_long_ago(consult)
    assert new.id != old.id and new.starts_at == new_start
    assert scan_due(new_start - timedelta(hours=24)) == {"reminder.day": 1}
    assert scan_due(old.starts_at - timedelta(minutes=15)) == {}  # the old time is gone
    assert scan_due(new_start - timedelta(minutes=15)) == {"reminder.soon": 1}
    assert (_count(rural, "reminder.day"), _count(spec, "reminder.day")) == (2, 2)
    assert notifications_of(rural, "reminder.day")[1].params["starts_at"] == new_start.isoformat()


def test_a_cancelled_booking_gets_no_reminder(make):
    rural, spec = make.rural(), make.specialist()
    consult = make.scheduled(rural, spec)
    appt = _booked_long_ago(consult)
    consults.cancel(rural, consult.ref, "Patient transferred")
    assert scan_due(appt.starts_at - timedelta(hours=24)) == {}
    assert scan_due(appt.starts_at - timedelta(minutes=15)) == {}
    assert _count(rural, "reminder.day") + _count(spec, "reminder.soon") == 0


def test_a_booking_made_inside_a_reminders_time_skips_that_reminder(make):
    rural, spec = make.rural(), make.specialist()
    appt = make.scheduled(rural, spec).appointment  # booked just now, a few hours ahead at most
    assert appt.starts_at - appt.created_at < timedelta(hours=24)
    assert scan_due(appt.starts_at - timedelta(hours=1)) == {}
    assert _count(rural, "reminder.day") == 0


def test_reminder_across_a_dst_change_is_24_real_hours_before_and_shows_local_time(make):
    rural = make.rural()  # Asia/Shanghai: no DST
    spec = make.specialist(timezone="America/New_York")  # DST starts Sun 14 Mar 2027, 02:00 local
    starts = datetime(2027, 3, 14, 14, 0, tzinfo=UTC)  # 10:00 EDT, the morning after the change
    _booked_long_ago(make.scheduled(rural, spec), starts)
    assert scan_due(datetime(2027, 3, 13, 13, 59, tzinfo=UTC)) == {}
    # 24 real hours before: 09:00 EST on the local clock the day before, not 10:00
    assert scan_due(datetime(2027, 3, 13, 14, 0, tzinfo=UTC)) == {"reminder.day": 1}
    [note] = notifications_of(spec, "reminder.day")
    assert "Sun 14 Mar 2027, 10:00 EDT" in texts.title(note.kind, note.params, spec.timezone)
    [other] = notifications_of(rural, "reminder.day")
    assert "Sun 14 Mar 2027, 22:00 CST" in texts.title(other.kind, other.params, rural.timezone)
    assert scan_due(datetime(2027, 3, 14, 13, 44, tzinfo=UTC)) == {}
    assert scan_due(datetime(2027, 3, 14, 13, 45, tzinfo=UTC)) == {"reminder.soon": 1}


def test_overdue_fires_once_at_its_target_to_coordinators_and_requester_and_flags_it(make):
    rural, spec, coord = make.rural(), make.specialist(), make.coordinator()
    consult = make.requested(rural, urgency=Urgency.URGENT)
    other = make.requested(rural, urgency=Urgency.ROUTINE)
    sent = consult.submitted_at
    assert scan_due(sent + timedelta(minutes=239)) == {}
    assert scan_due(sent + timedelta(minutes=240)) == {"request.overdue": 1}
    assert scan_due(sent + timedelta(minutes=300)) == {}
    db.session.expire_all()
    assert db.session.get(Consult, consult.id).overdue_at == sent + timedelta(minutes=240)
    assert db.session.get(Consult, other.id).overdue_at is None
    [note] = notifications_of(coord, "request.overdue")
    assert _count(rural, "request.overdue") == 1 and _count(spec, "request.overdue") == 0
    assert note.params["target"] == "4 hours"
    assert note.params["widened"] == "all eligible specialists were already offered it"
    assert texts.title(note.kind, note.params) == (
        "Request not accepted within its target of 4 hours (Urgent, Cardiology)")
    assert scan_due(other.submitted_at + timedelta(days=2)) == {"request.overdue": 1}


def test_an_accepted_request_is_never_overdue(make):
    rural, spec, coord = make.rural(), make.specialist(), make.coordinator()
    consult = make.accepted(rural, spec, urgency=Urgency.EMERGENCY)
    assert scan_due(consult.submitted_at + timedelta(hours=5)) == {}
    assert _count(coord, "request.overdue") == 0


def test_overdue_widens_offers_to_specialists_not_yet_offered(make):
    rural, first, coord = make.rural(), make.specialist(), make.coordinator()
    consult = make.requested(rural, urgency=Urgency.EMERGENCY)
    late = make.specialist()  # approved after the request was sent: not offered it
    assert scan_due(consult.submitted_at + timedelta(minutes=15)) == {"request.overdue": 1}
    assert _count(late, "consult.offered") == 1 and _count(first, "consult.offered") == 1
    assert notifications_of(coord, "request.overdue")[0].params["widened"] == "offered to 1 more specialist"
    db.session.expire_all()
    assert {o.specialist_id for o in db.session.get(Consult, consult.id).offers} == {first.id, late.id}


def test_a_malformed_target_stops_the_app_at_start(tmp_path):
    from config import TestingConfig
    from webapp import create_app
    from webapp.notifications.reminders import parse_targets

    assert parse_targets("urgent=60") == {"emergency": 15, "urgent": 60, "routine": 2880}
    with pytest.raises(ValueError, match="RESPONSE_TARGET_MINUTES"):
        create_app(TestingConfig, {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'x.db'}",
                                   "RESPONSE_TARGET_MINUTES": "urgent=soon"})


@pytest.fixture(scope="module")
def pg_app(tmp_path_factory):
    return build_postgres_app("reminders", tmp_path_factory, threads=4)


def test_concurrent_scans_on_postgresql_fire_each_once(pg_app):
    truncate_all(pg_app)
    with pg_app.app_context():
        make = Factory()
        rural, coord = make.rural(), make.coordinator()
        specs = [make.specialist() for _ in range(3)]
        starts = [_booked_long_ago(make.scheduled(rural, s)).starts_at for s in specs]
        requested = [make.requested(rural, urgency=Urgency.EMERGENCY) for _ in range(3)]
        now = max(starts) - timedelta(minutes=15)
        now = max(now, max(c.submitted_at for c in requested) + timedelta(minutes=15))
        rural_id, coord_id = rural.id, coord.id
        db.session.remove()
    results: list[dict] = []
    barrier = threading.Barrier(4)

    def scan() -> None:
        with pg_app.app_context():
            barrier.wait()
            results.append(scan_due(now))
            db.session.remove()

    threads = [threading.Thread(target=scan) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 4
    total: dict[str, int] = {}
    for r in results:
        for k, v in r.items():
            total[k] = total.get(k, 0) + v
    assert total == {"reminder.soon": 3, "request.overdue": 3}
    with pg_app.app_context():
        rural, coord = db.session.get(User, rural_id), db.session.get(User, coord_id)
        assert _count(rural, "reminder.soon") == 3 and _count(coord, "request.overdue") == 3
        assert len(list(db.session.scalars(select(Consult.id).where(Consult.overdue_at.is_not(None))))) == 3
        db.session.remove()


def test_the_delivery_worker_pass_fires_what_is_due_now(make, app):
    from webapp.models import utcnow
    from webapp.notifications import worker

    rural, spec = make.rural(), make.specialist()
    _booked_long_ago(make.scheduled(rural, spec), utcnow() + timedelta(minutes=10))
    db.session.commit()  # end this session's read snapshot: the worker writes through its own
    worker.run(app, once=True)
    db.session.rollback()
    assert (_count(rural, "reminder.soon"), _count(spec, "reminder.soon")) == (1, 1)


# --- what the doctors see (HTTP) ---------------------------------------------------------------------


def test_the_request_form_and_consult_page_show_the_expected_response_time(app, make):
    rural = make.rural()
    make.specialist()
    client = app.test_client()
    login(client, rural)
    form = client.get("/consults/new").get_data(as_text=True)
    assert ("A specialist usually answers an emergency request within 15 minutes, an urgent one within "
            "4 hours and a routine one within 2 days.") in form
    draft = make.draft(rural, urgency=Urgency.URGENT)
    page = post_form(client, f"/consults/{draft.ref}/submit", follow_redirects=True).get_data(as_text=True)
    assert "A specialist in Cardiology usually answers an urgent request within 4 hours." in page
    assert re.search(r"\d+ h( \d+ min)? left", page)
    assert 'id="emergency-instruction"' not in page  # urgent, not an emergency


def test_an_emergency_request_tells_the_requester_what_to_do_at_once(app, make, monkeypatch):
    monkeypatch.setitem(app.config, "EMERGENCY_INSTRUCTION", "Call 120 now or transfer to Longxi County Hospital.")
    rural = make.rural()
    make.specialist()
    client = app.test_client()
    login(client, rural)
    draft = make.draft(rural, urgency=Urgency.EMERGENCY)
    page = post_form(client, f"/consults/{draft.ref}/submit", follow_redirects=True).get_data(as_text=True)
    assert re.search(r'id="emergency-instruction"[^>]*><strong>Call 120 now or transfer to Longxi County Hospital.<',
                     page)
    assert "A specialist in Cardiology usually answers an emergency request within 15 minutes." in page


def test_dashboards_show_time_left_then_overdue_flagged_in_the_coordinators_queue(app, make):
    rural, coord = make.rural(), make.coordinator()
    make.specialist()
    consult = make.requested(rural, urgency=Urgency.URGENT)
    client = app.test_client()
    login(client, coord)
    home = client.get("/").get_data(as_text=True)
    assert re.search(r'class="muted response-left">\d+ h( \d+ min)? left<', home)
    assert scan_due(consult.submitted_at + timedelta(hours=4)) == {"request.overdue": 1}
    for path in ("/", "/admin/queue"):
        assert '<span class="badge overdue danger-text">Overdue</span>' in client.get(path).get_data(as_text=True)
    requester = app.test_client()
    login(requester, rural)
    assert re.search(r'response-left danger-text">overdue<', requester.get("/").get_data(as_text=True))
