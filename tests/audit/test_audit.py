"""The audit log: recording, listing with filters and pages, and refusing any change."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError

from webapp.audit.services import list_events, record, record_now
from webapp.extensions import db
from webapp.models import AuditEvent
from webapp.models.audit import AuditLogIsAppendOnly


def stored_events() -> list[AuditEvent]:
    return list(db.session.scalars(
        select(AuditEvent).order_by(AuditEvent.id).execution_options(populate_existing=True)))


def actions(rows) -> list[str]:
    return [e.action for e in rows]


# --- recording ----------------------------------------------------------------------------------


def test_record_joins_the_callers_transaction(make):
    doctor = make.rural()
    draft = make.draft(doctor)
    before = len(stored_events())

    event = record("test.kept", actor=doctor, consult=draft, target="attachment:7", detail={"n": 1})
    db.session.commit()
    record("test.discarded", actor=doctor)
    db.session.rollback()

    rows = stored_events()
    assert len(rows) == before + 1
    kept = rows[-1]
    assert kept.id == event.id
    assert (kept.action, kept.actor_id, kept.actor_email) == ("test.kept", doctor.id, doctor.email)
    assert (kept.consult_id, kept.target, kept.detail) == (draft.id, "attachment:7", {"n": 1})
    assert kept.ip is None  # no request, no address
    assert kept.at is not None and kept.at.tzinfo is not None


def test_record_now_commits_at_once(make):
    doctor = make.rural()
    record_now("test.now", actor=doctor)
    db.session.rollback()
    [event] = [e for e in stored_events() if e.action == "test.now"]
    assert event.actor_id == doctor.id and event.detail == {}


def test_an_event_without_actor(app):
    record_now("auth.login_failed", detail={"email": "nobody@test.example"})
    [event] = stored_events()
    assert (event.actor_id, event.actor_email, event.consult_id) == (None, None, None)
    assert event.detail == {"email": "nobody@test.example"}


# --- listing -------------------------------------------------------------------------------------


@pytest.fixture
def log(make):
    """A known log: two consults, two actors, nine entries."""
    doctor = make.rural(email="Doctor@Test.Example")
    specialist = make.specialist(email="heart@test.example")
    first = make.draft(doctor)  # consult.created
    second = make.draft(doctor)  # consult.created
    record_now("consult.viewed", actor=specialist, consult=first)
    record_now("consult.viewed", actor=doctor, consult=second)
    record_now("consult.access_denied", actor=specialist, consult=second, detail={"action": "view"})
    record_now("auth.login", actor=doctor)
    record_now("auth.login", actor=specialist)
    record_now("auth.login_failed", detail={"email": "ghost@test.example"})
    record_now("attachment.viewed", actor=doctor, consult=first, target="attachment:1")
    return doctor, specialist, first, second


def test_list_events_newest_first_with_the_total(log):
    rows, total = list_events()
    assert total == 9
    assert [e.id for e in rows] == sorted((e.id for e in rows), reverse=True)
    assert actions(rows)[:2] == ["attachment.viewed", "auth.login_failed"]


def test_list_events_filters(log):
    doctor, specialist, first, second = log

    rows, total = list_events(consult_ref=first.ref)
    assert total == 3
    assert actions(rows) == ["attachment.viewed", "consult.viewed", "consult.created"]
    assert {e.consult_id for e in rows} == {first.id}

    rows, total = list_events(action="auth.login")  # a prefix: login and login_failed
    assert (total, actions(rows)) == (3, ["auth.login_failed", "auth.login", "auth.login"])
    assert list_events(action="consult.")[1] == 5
    assert list_events(action="consult.access_denied")[1] == 1

    rows, total = list_events(actor_email="  HEART@test.example ")
    assert total == 3
    assert {e.actor_id for e in rows} == {specialist.id}

    rows, total = list_events(consult_ref=second.ref, action="consult.viewed", actor_email=doctor.email)
    assert (total, [e.actor_id for e in rows]) == (1, [doctor.id])

    assert list_events(consult_ref="no-such-ref") == ([], 0)
    assert list_events(actor_email="nobody@test.example") == ([], 0)


def test_list_events_pages(log):
    everything, total = list_events(per_page=100)
    pages = [list_events(page=n, per_page=4) for n in (1, 2, 3, 4)]
    assert [len(rows) for rows, _ in pages] == [4, 4, 1, 0]
    assert {t for _, t in pages} == {total} == {9}
    assert [e.id for rows, _ in pages for e in rows] == [e.id for e in everything]
    rows, total = list_events(page=2, per_page=2, action="consult.")
    assert (len(rows), total) == (2, 5)


# --- append-only ---------------------------------------------------------------------------------


def test_changing_an_entry_through_the_session_is_refused(make):
    doctor = make.rural()
    event = record_now("auth.login", actor=doctor)
    event.action = "auth.nothing_to_see"
    with pytest.raises(AuditLogIsAppendOnly):
        db.session.commit()
    db.session.rollback()
    assert actions(stored_events()) == ["auth.login"]


@pytest.mark.parametrize("attribute,value", [
    ("actor_id", None), ("actor_email", "someone@else.example"), ("detail", {"forged": True}),
    ("target", "user:999999"), ("ip", "10.0.0.1"),
])
def test_every_column_is_protected(make, attribute, value):
    doctor = make.rural()
    record_now("auth.login", actor=doctor, target=f"user:{doctor.id}")
    event = db.session.scalars(select(AuditEvent)).one()
    setattr(event, attribute, value)
    with pytest.raises(AuditLogIsAppendOnly):
        db.session.flush()
    db.session.rollback()
    [kept] = stored_events()
    assert (kept.actor_id, kept.actor_email, kept.detail, kept.target, kept.ip) == (
        doctor.id, doctor.email, {}, f"user:{doctor.id}", None)


def test_deleting_an_entry_through_the_session_is_refused(make):
    doctor = make.rural()
    record_now("auth.login", actor=doctor)
    record_now("auth.logout", actor=doctor)
    first = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id)).first()
    db.session.delete(first)
    with pytest.raises(AuditLogIsAppendOnly):
        db.session.commit()
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == 2


def test_a_refused_change_also_blocks_the_rest_of_that_flush(make):
    doctor = make.rural()
    record_now("auth.login", actor=doctor)
    event = db.session.scalars(select(AuditEvent)).one()
    record("auth.logout", actor=doctor)  # pending in the same unit of work...
    event.detail = {"edited": True}  # ...as a forbidden change
    with pytest.raises(AuditLogIsAppendOnly):
        db.session.commit()
    db.session.rollback()
    assert actions(stored_events()) == ["auth.login"]
    assert stored_events()[0].detail == {}


def test_the_database_refuses_bulk_updates_of_audit_entries(app):
    record_now("consult.viewed", detail={"n": 1})
    with pytest.raises(DBAPIError, match="append-only"):
        db.session.execute(update(AuditEvent).values(action="tampered"))
        db.session.flush()
    db.session.rollback()
    assert db.session.scalars(select(AuditEvent.action)).all() == ["consult.viewed"]
