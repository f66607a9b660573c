"""Reschedule by either party in one transaction; cancel keeps its reason on the booking."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from tests.conftest import login, post_form
from webapp.consults import services as consults
from webapp.errors import Conflict, Forbidden, ValidationFailed
from webapp.extensions import db
from webapp.models import Appointment, AuditEvent, BookedBlock, Consult, ConsultStatus
from webapp.models.notification import Notification
from webapp.scheduling import services as scheduling


def fresh(model, **where):
    db.session.expire_all()
    return list(db.session.scalars(select(model).filter_by(**where).order_by(model.id)))


def blocks_of(appointment_id: int) -> list:
    db.session.expire_all()
    return list(db.session.scalars(select(BookedBlock.block_start).filter_by(appointment_id=appointment_id)
                                   .order_by(BookedBlock.block_start)))


@pytest.fixture
def booked(make):
    requester, specialist = make.rural(), make.specialist(timezone="America/New_York")
    make.availability(specialist, hours=(8, 18))
    consult = make.scheduled(requester, specialist)
    return requester, specialist, consult


@pytest.mark.parametrize("who", ["requester", "specialist"])
def test_either_party_moves_the_time_and_the_old_blocks_are_freed(booked, who):
    requester, specialist, consult = booked
    actor = requester if who == "requester" else specialist
    [old] = fresh(Appointment, consult_id=consult.id)
    new_start = next(s.starts_at for s in scheduling.open_slots(specialist) if s.starts_at > old.starts_at)

    consults.reschedule(actor, consult.ref, new_start, "  Clinic overrun  ")

    old_after, new = fresh(Appointment, consult_id=consult.id)
    assert old_after.cancelled_at is not None and old_after.end_reason == "Rescheduled: Clinic overrun"
    assert old_after.ended_by_id == actor.id and blocks_of(old_after.id) == []
    assert new.cancelled_at is None and new.starts_at == new_start and new.booked_by_id == actor.id
    assert blocks_of(new.id) == [new_start + timedelta(minutes=15 * i) for i in range(2)]
    assert old.starts_at in {s.starts_at for s in scheduling.open_slots(specialist)}
    assert fresh(Consult, id=consult.id)[0].status == ConsultStatus.SCHEDULED
    [event] = fresh(AuditEvent, action="consult.rescheduled")
    assert event.detail["reason"] == "Clinic overrun" and event.actor_id == actor.id
    assert event.detail["from"] == old.starts_at.isoformat() and event.detail["to"] == new_start.isoformat()
    # the other party is told, with the reason (the one who moved it is not)
    other = specialist if actor is requester else requester
    [note] = fresh(Notification, kind="consult.rescheduled")
    assert note.user_id == other.id and note.consult_id == consult.id
    assert note.params["reason"] == "Clinic overrun" and note.params["starts_at"] == new_start.isoformat()


def test_a_move_onto_an_overlapping_slot_reuses_the_freed_blocks(booked):
    requester, specialist, consult = booked
    [old] = fresh(Appointment, consult_id=consult.id)
    wall = old.starts_at.astimezone(ZoneInfo(specialist.timezone))
    minute = wall.hour * 60 + wall.minute + 15  # extra hours on the quarter: a slot that overlaps the old one
    scheduling.add_extra_hours(specialist, wall.date(), minute, minute + 30)
    consults.reschedule(requester, consult.ref, old.starts_at + timedelta(minutes=15), "Fifteen minutes later")
    _, new = fresh(Appointment, consult_id=consult.id)
    assert blocks_of(new.id) == [old.starts_at + timedelta(minutes=15), old.starts_at + timedelta(minutes=30)]


def test_a_taken_slot_is_refused_and_the_old_time_is_kept_whole(make, booked):
    requester, specialist, consult = booked
    [old] = fresh(Appointment, consult_id=consult.id)
    other = make.scheduled(make.rural(), specialist)
    [taken] = fresh(Appointment, consult_id=other.id)

    with pytest.raises(Conflict):
        consults.reschedule(requester, consult.ref, taken.starts_at, "Try their slot")

    [still] = fresh(Appointment, consult_id=consult.id)
    assert still.id == old.id and still.cancelled_at is None and len(blocks_of(old.id)) == 2
    assert fresh(AuditEvent, action="consult.rescheduled") == []
    assert fresh(Notification, kind="consult.rescheduled") == []  # nobody told of a move that did not happen
    # the database still refuses a double booking through booked_blocks' primary key
    assert taken.starts_at not in {s.starts_at for s in scheduling.open_slots(specialist)}


@pytest.mark.parametrize(("args", "error"), [
    ({"reason": "  "}, ValidationFailed),
    ({"same": True}, ValidationFailed),
    ({"outside": True}, ValidationFailed),
])
def test_bad_reschedules_change_nothing(booked, args, error):
    requester, specialist, consult = booked
    [old] = fresh(Appointment, consult_id=consult.id)
    when = old.starts_at
    if args.get("outside"):
        when = old.starts_at.replace(hour=3) + timedelta(days=1)  # 03:00 UTC: night in New York
    elif not args.get("same"):
        when = next(s.starts_at for s in scheduling.open_slots(specialist) if s.starts_at != old.starts_at)
    with pytest.raises(error):
        consults.reschedule(requester, consult.ref, when, args.get("reason", "Because"))
    db.session.rollback()
    [still] = fresh(Appointment, consult_id=consult.id)
    assert still.cancelled_at is None and len(blocks_of(old.id)) == 2


def test_outsiders_and_unbooked_consults_cannot_be_rescheduled(make, booked):
    requester, specialist, consult = booked
    slot = scheduling.open_slots(specialist)[3].starts_at
    with pytest.raises(Forbidden):
        consults.reschedule(make.coordinator(), consult.ref, slot, "Not mine")
    accepted = make.accepted(requester, specialist)
    with pytest.raises(Forbidden):
        consults.reschedule(requester, accepted.ref, slot, "Nothing booked")


def test_cancel_keeps_the_reason_on_the_booking(booked):
    requester, _specialist, consult = booked
    consults.cancel(requester, consult.ref, "Patient transferred")
    [appt] = fresh(Appointment, consult_id=consult.id)
    assert appt.end_reason == "Patient transferred" and appt.ended_by_id == requester.id


def test_reschedule_from_the_page_shows_in_the_history(app, booked):
    _requester, specialist, consult = booked
    [old] = fresh(Appointment, consult_id=consult.id)
    client = app.test_client()
    assert login(client, specialist).status_code == 302
    page = client.get(f"/consults/{consult.ref}").get_data(as_text=True)
    assert f"/consults/{consult.ref}/reschedule" in page
    form = client.get(f"/consults/{consult.ref}/reschedule")
    assert form.status_code == 200
    new_start = next(s.starts_at for s in scheduling.open_slots(specialist) if s.starts_at > old.starts_at)
    assert new_start.isoformat() in form.get_data(as_text=True)

    missing = post_form(client, f"/consults/{consult.ref}/reschedule", {"slot": new_start.isoformat()},
                        token_from=f"/consults/{consult.ref}/reschedule")
    assert missing.status_code == 422 and "Give a reason" in missing.get_data(as_text=True)
    garbled = post_form(client, f"/consults/{consult.ref}/reschedule", {"slot": "soon", "reason": "x"},
                        token_from=f"/consults/{consult.ref}/reschedule")
    assert garbled.status_code == 422

    r = post_form(client, f"/consults/{consult.ref}/reschedule",
                  {"slot": new_start.isoformat(), "reason": "Theatre list ran late"},
                  token_from=f"/consults/{consult.ref}/reschedule")
    assert r.status_code == 302
    page = client.get(f"/consults/{consult.ref}").get_data(as_text=True)
    assert "Booking history" in page and "moved" in page and "Theatre list ran late" in page
    assert specialist.full_name in page.split('id="booking-history"')[1].split("</ul>")[0]
