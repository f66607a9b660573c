"""Leave, holidays and one-off extra hours, in the specialist's zone, across a DST change."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from webapp.consults import services as consults
from webapp.errors import NotFound, ValidationFailed
from webapp.extensions import db
from webapp.models import Appointment, AuditEvent
from webapp.scheduling import services as scheduling
from webapp.scheduling.services import Window

BERLIN = ZoneInfo("Europe/Berlin")
H = 60


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local_days(slots) -> list[str]:
    return [s.starts_at.astimezone(BERLIN).strftime("%a %d %H:%M") for s in slots]


@pytest.fixture
def berliner(make):
    specialist = make.specialist(timezone="Europe/Berlin")
    scheduling.set_availability(specialist, [Window(d, 9 * H, 10 * H) for d in range(7)])
    return specialist


# Europe/Berlin springs forward on Sunday 28 March 2027 (CET UTC+1 -> CEST UTC+2).
NOW = utc(2027, 3, 25, 12)


def test_leave_over_the_dst_change_removes_exactly_those_local_days(berliner):
    before = scheduling.open_slots(berliner, now=NOW, days=6)
    assert local_days(before)[::2] == ["Fri 26 09:00", "Sat 27 09:00", "Sun 28 09:00", "Mon 29 09:00",
                                       "Tue 30 09:00", "Wed 31 09:00"]
    scheduling.add_leave(berliner, date(2027, 3, 27), date(2027, 3, 28), note="Qingming")

    after = scheduling.open_slots(berliner, now=NOW, days=6)

    assert local_days(after)[::2] == ["Fri 26 09:00", "Mon 29 09:00", "Tue 30 09:00", "Wed 31 09:00"]
    # 09:00 Berlin is 08:00 UTC before the change and 07:00 UTC after it
    assert [s.starts_at.hour for s in after][::2] == [8, 7, 7, 7]


def test_extra_hours_add_slots_on_that_date_only_and_leave_wins(berliner):
    scheduling.add_extra_hours(berliner, date(2027, 3, 29), 14 * H, 15 * H)  # Monday, after the change
    scheduling.add_extra_hours(berliner, date(2027, 3, 26), 20 * H, 21 * H)  # Friday, before it
    scheduling.add_leave(berliner, date(2027, 3, 30), date(2027, 3, 30))
    scheduling.add_extra_hours(berliner, date(2027, 3, 30), 14 * H, 15 * H)  # on leave: no slots

    slots = scheduling.open_slots(berliner, now=NOW, days=6)

    days = local_days(slots)
    assert "Mon 29 14:00" in days and "Mon 29 14:30" in days
    assert "Fri 26 20:00" in days and "Fri 26 20:30" in days
    assert not [d for d in days if d.startswith("Tue 30")]
    assert utc(2027, 3, 29, 12) in {s.starts_at for s in slots}  # 14:00 CEST
    assert utc(2027, 3, 26, 19) in {s.starts_at for s in slots}  # 20:00 CET
    week_later = scheduling.open_slots(berliner, now=NOW + timedelta(days=7), days=6)
    assert not [d for d in local_days(week_later) if d.endswith("14:00")]


def test_a_slot_inside_leave_cannot_be_booked(make, berliner):
    scheduling.add_leave(berliner, date(2027, 3, 29), date(2027, 3, 29))
    with pytest.raises(ValidationFailed, match="on leave"):
        scheduling.is_bookable(berliner, utc(2027, 3, 29, 7), now=NOW)
    assert scheduling.is_bookable(berliner, utc(2027, 3, 30, 7), now=NOW).starts_at == utc(2027, 3, 30, 7)


def test_booking_now_refuses_a_slot_on_leave(make, berliner):
    requester = make.rural()
    consult = make.accepted(requester, berliner)
    slot = next(s for s in scheduling.open_slots(berliner) if s.starts_at.astimezone(BERLIN).date()
                > datetime.now(BERLIN).date() + timedelta(days=1))
    day = slot.starts_at.astimezone(BERLIN).date()
    scheduling.add_leave(berliner, day, day)
    assert slot not in scheduling.open_slots(berliner)
    with pytest.raises(ValidationFailed, match="on leave"):
        consults.book(requester, consult.ref, slot.starts_at)
    db.session.rollback()
    assert db.session.scalars(select(Appointment)).all() == []


@pytest.mark.parametrize(("call", "message"), [
    (lambda s: scheduling.add_leave(s, date(2027, 4, 2), date(2027, 4, 1)), "before the first"),
    (lambda s: scheduling.add_leave(s, date(2027, 1, 1), date(2028, 6, 1)), "at most"),
    (lambda s: scheduling.add_extra_hours(s, date(2027, 4, 1), 10 * H, 9 * H), "after the start"),
    (lambda s: scheduling.add_extra_hours(s, date(2027, 4, 1), 10 * H, 10 * H + 15), "at least one"),
    (lambda s: scheduling.add_extra_hours(s, date(2027, 4, 1), 10 * H + 5, 11 * H), "quarter hour"),
])
def test_bad_exceptions_are_refused(berliner, call, message):
    with pytest.raises(ValidationFailed, match=message):
        call(berliner)
    db.session.rollback()
    assert scheduling.exceptions_of(berliner) == []


def test_exceptions_are_audited_and_removed_only_by_their_owner(make, berliner):
    other = make.specialist()
    leave = scheduling.add_leave(berliner, date(2027, 3, 27), date(2027, 3, 28))
    with pytest.raises(NotFound):
        scheduling.remove_exception(other, leave.id)
    scheduling.remove_exception(berliner, leave.id)
    assert scheduling.exceptions_of(berliner) == []
    assert len(scheduling.open_slots(berliner, now=NOW, days=6)) == 12
    actions = [e.action for e in db.session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert actions[-2:] == ["availability.leave_added", "availability.exception_removed"]
