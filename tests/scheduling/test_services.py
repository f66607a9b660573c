"""Availability, slots across time zones and DST, booking without double booking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from webapp.consults import services as consults
from webapp.errors import Conflict, Forbidden, ValidationFailed
from webapp.extensions import db
from webapp.models import Appointment, AuditEvent, AvailabilityWindow, BookedBlock, Consult, ConsultStatus
from webapp.scheduling import services as scheduling
from webapp.scheduling.services import Slot, Window
from webapp.timefmt import local

LONDON = ZoneInfo("Europe/London")
SHANGHAI = ZoneInfo("Asia/Shanghai")
H = 60  # minutes in an hour, for readable windows


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def every_day(start_minute: int, end_minute: int) -> list[Window]:
    return [Window(day, start_minute, end_minute) for day in range(7)]


def stored_windows(specialist) -> list[tuple[int, int, int]]:
    return [(w.weekday, w.start_minute, w.end_minute) for w in db.session.scalars(
        select(AvailabilityWindow).where(AvailabilityWindow.specialist_id == specialist.id)
        .order_by(AvailabilityWindow.weekday, AvailabilityWindow.start_minute))]


def appointments() -> list[Appointment]:
    return list(db.session.scalars(
        select(Appointment).order_by(Appointment.id).execution_options(populate_existing=True)))


def blocks() -> list[tuple[int, datetime]]:
    return [(b.specialist_id, b.block_start) for b in db.session.scalars(
        select(BookedBlock).order_by(BookedBlock.specialist_id, BookedBlock.block_start))]


def local_wall(dt: datetime, tz: ZoneInfo) -> str:
    return dt.astimezone(tz).strftime("%a %H:%M")


def assert_inside_availability(slots: list[Slot], windows: list[Window], tz: ZoneInfo,
                               minutes: int = 30) -> None:
    """Every slot is `minutes` of real time, every minute of it lies in one local window
    (judged by the wall clock the specialist sees), and no two slots overlap."""
    for slot in slots:
        assert slot.ends_at - slot.starts_at == timedelta(minutes=minutes), slot
        for m in range(minutes):
            wall = (slot.starts_at + timedelta(minutes=m)).astimezone(tz)
            minute_of_day = wall.hour * 60 + wall.minute
            assert any(w.weekday == wall.weekday() and w.start_minute <= minute_of_day < w.end_minute
                       for w in windows), (
                f"slot {slot.starts_at.astimezone(tz)}–{slot.ends_at.astimezone(tz)} reaches {wall},"
                f" outside the availability {windows}")
    for a, b in pairwise(sorted(slots)):
        assert a.ends_at <= b.starts_at, f"{a} overlaps {b}"


def slot_in_mid_day(specialist) -> Slot:
    """An open slot well inside a local day (so shifted slots around it stay in the day)."""
    tz = ZoneInfo(specialist.timezone)
    return next(s for s in scheduling.open_slots(specialist)
                if 2 <= s.starts_at.astimezone(tz).hour <= 20)


# --- set_availability ----------------------------------------------------------------------


def test_set_availability_replaces_the_weekly_windows(make):
    specialist = make.specialist()
    scheduling.set_availability(specialist, every_day(9 * H, 12 * H))
    scheduling.set_availability(specialist, [Window(4, 14 * H, 15 * H), Window(0, 8 * H, 9 * H),
                                             Window(0, 9 * H, 10 * H + 30)])
    assert stored_windows(specialist) == [(0, 8 * H, 9 * H), (0, 9 * H, 10 * H + 30), (4, 14 * H, 15 * H)]
    details = [e.detail for e in db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "availability.updated").order_by(AuditEvent.id))]
    assert details == [{"windows": 7}, {"windows": 3}]
    scheduling.set_availability(specialist, [])
    assert stored_windows(specialist) == []


@pytest.mark.parametrize(("windows", "message"), [
    ([Window(0, 9 * H + 10, 10 * H)], "quarter hour"),
    ([Window(0, 9 * H, 10 * H + 5)], "quarter hour"),
    ([Window(1, 10 * H, 9 * H)], "end must be after the start"),
    ([Window(1, 9 * H, 9 * H)], "end must be after the start"),
    ([Window(1, 23 * H, 24 * H + 30)], "end must be after the start"),
    ([Window(2, 9 * H, 9 * H + 15)], "at least one 30-minute consult"),
    ([Window(3, 9 * H, 11 * H), Window(3, 10 * H + 30, 12 * H)], "overlap on Thursday"),
    ([Window(3, 9 * H, 12 * H), Window(3, 10 * H, 11 * H)], "overlap on Thursday"),
    ([Window(7, 9 * H, 10 * H)], "Monday to Sunday"),
    ([Window(-1, 9 * H, 10 * H)], "Monday to Sunday"),
], ids=["off-quarter-start", "off-quarter-end", "end-before-start", "empty", "past-midnight",
        "shorter-than-a-slot", "overlap", "nested", "weekday-7", "weekday-minus-1"])
def test_set_availability_refuses_bad_windows_and_keeps_the_old_ones(make, windows, message):
    specialist = make.specialist()
    scheduling.set_availability(specialist, [Window(5, 8 * H, 9 * H)])
    with pytest.raises(ValidationFailed) as info:
        scheduling.set_availability(specialist, [Window(0, 8 * H, 9 * H), *windows])
    db.session.rollback()
    assert message in info.value.message
    assert stored_windows(specialist) == [(5, 8 * H, 9 * H)]


def test_adjacent_windows_and_a_whole_day_are_fine(make):
    specialist = make.specialist()
    scheduling.set_availability(specialist, [Window(0, 9 * H, 10 * H), Window(0, 10 * H, 11 * H),
                                             Window(6, 0, 24 * H)])
    assert len(stored_windows(specialist)) == 3


def test_only_specialists_publish_availability(make):
    for user in (make.rural(), make.coordinator()):
        with pytest.raises(Forbidden):
            scheduling.set_availability(user, every_day(9 * H, 10 * H))
        db.session.rollback()
    assert db.session.scalars(select(AvailabilityWindow)).all() == []


# --- open slots in the specialist's time zone ---------------------------------------------------


@pytest.mark.parametrize(("now", "expected_utc"), [
    (utc(2026, 1, 4, 12), [utc(2026, 1, 5, 9), utc(2026, 1, 5, 9, 30)]),  # GMT
    (utc(2026, 7, 5, 12), [utc(2026, 7, 6, 8), utc(2026, 7, 6, 8, 30)]),  # BST
], ids=["winter", "summer"])
def test_open_slots_are_in_the_specialists_own_time_zone(make, now, expected_utc):
    london = make.specialist(timezone="Europe/London")
    shanghai = make.specialist(timezone="Asia/Shanghai")
    for s in (london, shanghai):
        scheduling.set_availability(s, [Window(0, 9 * H, 10 * H)])  # Mondays 09:00–10:00 local

    slots = scheduling.open_slots(london, now=now, days=7)

    assert [s.starts_at for s in slots] == expected_utc
    assert [s.ends_at for s in slots] == [t + timedelta(minutes=30) for t in expected_utc]
    # 09:00 in London, whoever looks at it: a viewer in Shanghai sees the same instant
    assert [local(s.starts_at, "Europe/London").strftime("%a %H:%M") for s in slots] == [
        "Mon 09:00", "Mon 09:30"]
    assert [local(s.starts_at, "Asia/Shanghai").hour for s in slots] == [
        t.astimezone(SHANGHAI).hour for t in expected_utc]
    assert [s.starts_at for s in scheduling.open_slots(shanghai, now=now, days=7)] == [
        expected_utc[0].replace(hour=1), expected_utc[0].replace(hour=1, minute=30)]


@pytest.mark.parametrize(("now", "expected_utc_hours"), [
    # Sat 28 March GMT, Sun 29 to Tue 31 BST: the slot stays at 09:00 London time
    (utc(2026, 3, 27, 12), [9, 8, 8, 8]),
    # Sat 24 October BST, Sun 25 to Tue 27 GMT
    (utc(2026, 10, 23, 12), [8, 9, 9, 9]),
], ids=["spring-forward", "fall-back"])
def test_a_morning_window_keeps_its_local_time_across_the_dst_change(make, now, expected_utc_hours):
    specialist = make.specialist(timezone="Europe/London")
    scheduling.set_availability(specialist, every_day(9 * H, 9 * H + 30))

    slots = scheduling.open_slots(specialist, now=now, days=4)

    assert [s.starts_at.hour for s in slots] == expected_utc_hours
    assert {s.starts_at.astimezone(LONDON).strftime("%H:%M") for s in slots} == {"09:00"}


NIGHT_WINDOWS = {
    "whole-night": [Window(6, 0, 4 * H)],
    "inside-the-changing-hour": [Window(6, 1 * H, 2 * H)],
    "across-the-changing-hour": [Window(6, 1 * H + 30, 3 * H)],
    "ending-in-the-changing-hour": [Window(6, 0, 1 * H + 30)],
    "starting-in-the-changing-hour": [Window(6, 1 * H + 30, 2 * H + 30)],
}
DST_SUNDAYS = {"spring": utc(2026, 3, 28, 12), "autumn": utc(2026, 10, 24, 12)}


@pytest.mark.parametrize("season", DST_SUNDAYS)
@pytest.mark.parametrize("shape", NIGHT_WINDOWS)
def test_no_bad_slots_around_the_dst_change(make, season, shape):
    """Windows touching 01:00–02:00 London time on the Sundays the clocks change."""
    specialist = make.specialist(timezone="Europe/London")
    windows = NIGHT_WINDOWS[shape]
    scheduling.set_availability(specialist, windows)

    slots = scheduling.open_slots(specialist, now=DST_SUNDAYS[season], days=2)

    assert_inside_availability(slots, windows, LONDON)
    assert len({s.starts_at for s in slots}) == len(slots)
    for slot in slots:  # and each one can be booked as offered
        assert scheduling.is_bookable(specialist, slot.starts_at, now=DST_SUNDAYS[season]) == slot


def test_spring_forward_night_offers_only_the_hours_that_exist(make):
    specialist = make.specialist(timezone="Europe/London")
    scheduling.set_availability(specialist, [Window(6, 0, 4 * H)])
    slots = scheduling.open_slots(specialist, now=utc(2026, 3, 28, 12), days=2)
    # 00:00–01:00 GMT then 02:00–04:00 BST: three real hours, six slots
    assert [local_wall(s.starts_at, LONDON) for s in slots] == [
        "Sun 00:00", "Sun 00:30", "Sun 02:00", "Sun 02:30", "Sun 03:00", "Sun 03:30"]
    assert slots[-1].ends_at == utc(2026, 3, 29, 3)


def test_a_window_that_does_not_exist_that_night_offers_nothing(make):
    specialist = make.specialist(timezone="Europe/London")
    scheduling.set_availability(specialist, [Window(6, 1 * H, 2 * H)])  # 01:00–02:00 is skipped
    assert scheduling.open_slots(specialist, now=utc(2026, 3, 28, 12), days=2) == []
    with pytest.raises(ValidationFailed):
        # 01:00 UTC is 02:00 BST, an hour after the window would have ended
        scheduling.is_bookable(specialist, utc(2026, 3, 29, 1), now=utc(2026, 3, 28, 12))


# --- is_bookable ----------------------------------------------------------------------------------


@pytest.fixture
def morning_specialist(make):
    """Bookable 09:00–12:00 Asia/Shanghai (01:00–04:00 UTC) every day."""
    specialist = make.specialist(timezone="Asia/Shanghai")
    scheduling.set_availability(specialist, every_day(9 * H, 12 * H))
    return specialist


MONDAY_0830_CST = utc(2026, 1, 5, 0, 30)


def test_is_bookable_returns_the_slot(morning_specialist):
    slot = scheduling.is_bookable(morning_specialist, utc(2026, 1, 5, 1), now=MONDAY_0830_CST)
    assert slot == Slot(utc(2026, 1, 5, 1), utc(2026, 1, 5, 1, 30))
    same_instant = datetime(2026, 1, 5, 9, 0, tzinfo=SHANGHAI)
    assert scheduling.is_bookable(morning_specialist, same_instant, now=MONDAY_0830_CST) == slot
    last = scheduling.is_bookable(morning_specialist, utc(2026, 1, 5, 3, 30), now=MONDAY_0830_CST)
    assert last.ends_at == utc(2026, 1, 5, 4)


@pytest.mark.parametrize(("starts_at", "now", "message"), [
    (utc(2026, 1, 4, 1), MONDAY_0830_CST, "has passed or is too soon"),
    (utc(2026, 1, 5, 1), utc(2026, 1, 5, 0, 50), "has passed or is too soon"),  # 10 min ahead
    (utc(2026, 1, 20, 1), MONDAY_0830_CST, "beyond the booking horizon"),
    (utc(2026, 1, 5, 5), MONDAY_0830_CST, "outside the specialist's availability"),  # 13:00 CST
    (utc(2026, 1, 5, 4), MONDAY_0830_CST, "outside the specialist's availability"),  # 12:00 end
    (utc(2026, 1, 5, 1, 15), MONDAY_0830_CST, "outside the specialist's availability"),  # off grid
], ids=["past", "too-soon", "beyond-horizon", "afternoon", "at-window-end", "off-the-grid"])
def test_is_bookable_refuses(morning_specialist, starts_at, now, message):
    with pytest.raises(ValidationFailed) as info:
        scheduling.is_bookable(morning_specialist, starts_at, now=now)
    assert message in info.value.message


def test_the_horizon_is_the_last_bookable_day(morning_specialist):
    slots = scheduling.open_slots(morning_specialist, now=MONDAY_0830_CST)
    assert slots[0].starts_at == utc(2026, 1, 5, 1)
    assert slots[-1].ends_at <= MONDAY_0830_CST + timedelta(days=14)
    assert len(slots) == 14 * 6
    for slot in (slots[0], slots[-1]):
        assert scheduling.is_bookable(morning_specialist, slot.starts_at, now=MONDAY_0830_CST) == slot


# --- booking ------------------------------------------------------------------------------------------


def test_two_consults_booking_the_same_slot_the_second_gets_a_conflict(make):
    doctor, specialist = make.rural(), make.specialist()
    first, second = make.accepted(doctor, specialist), make.accepted(doctor, specialist)
    make.availability(specialist)
    slot = scheduling.open_slots(specialist)[0]

    consults.book(doctor, first.ref, slot.starts_at)
    with pytest.raises(Conflict) as info:
        consults.book(specialist, second.ref, slot.starts_at)
    assert "just been booked" in info.value.message

    # the refused booking leaves the session usable and the database with one appointment
    [appt] = appointments()
    assert appt.consult_id == first.id and appt.starts_at == slot.starts_at
    assert blocks() == [(specialist.id, slot.starts_at), (specialist.id, slot.starts_at + timedelta(minutes=15))]
    statuses = dict(db.session.execute(select(Consult.ref, Consult.status)).all())
    assert statuses == {first.ref: ConsultStatus.SCHEDULED, second.ref: ConsultStatus.ACCEPTED}
    assert slot.starts_at not in {s.starts_at for s in scheduling.open_slots(specialist)}


def test_an_overlapping_slot_from_changed_availability_is_refused(make):
    doctor, specialist = make.rural(), make.specialist()
    first, second = make.accepted(doctor, specialist), make.accepted(doctor, specialist)
    make.availability(specialist)
    booked = slot_in_mid_day(specialist)
    consults.book(doctor, first.ref, booked.starts_at)
    # the specialist moves their grid by a quarter hour: 09:15 now starts a slot
    scheduling.set_availability(specialist, every_day(15, 24 * H - 15))
    shifted = booked.starts_at + timedelta(minutes=15)
    assert scheduling.is_bookable(specialist, shifted).starts_at == shifted  # the slot check passes
    assert shifted not in {s.starts_at for s in scheduling.open_slots(specialist)}

    with pytest.raises(Conflict):
        consults.book(doctor, second.ref, shifted)

    assert [a.consult_id for a in appointments()] == [first.id]
    assert len(blocks()) == 2


def test_the_booked_block_key_refuses_overlaps_even_without_the_slot_check(make):
    doctor, specialist, colleague = make.rural(), make.specialist(), make.specialist()
    first, second = make.accepted(doctor, specialist), make.accepted(doctor, specialist)
    third = make.accepted(doctor, colleague)
    make.availability(specialist)
    booked = slot_in_mid_day(specialist)
    consults.book(doctor, first.ref, booked.starts_at)

    def insert_directly(consult, who, starts_at):
        appt = Appointment(consult_id=consult.id, specialist_id=who.id, starts_at=starts_at,
                           ends_at=starts_at + timedelta(minutes=30), booked_by_id=doctor.id)
        appt.blocks = [BookedBlock(specialist_id=who.id, block_start=starts_at + timedelta(minutes=m))
                       for m in (0, 15)]
        db.session.add(appt)
        db.session.commit()

    with pytest.raises(IntegrityError):
        insert_directly(second, specialist, booked.starts_at + timedelta(minutes=15))
    db.session.rollback()
    assert [a.consult_id for a in appointments()] == [first.id]

    # another specialist at the same instant is not a double booking
    insert_directly(third, colleague, booked.starts_at)
    assert sorted(a.consult_id for a in appointments()) == sorted([first.id, third.id])
    assert len(blocks()) == 4


def test_release_frees_the_blocks_for_another_booking(make):
    doctor, specialist = make.rural(), make.specialist()
    first, second = make.accepted(doctor, specialist), make.accepted(doctor, specialist)
    make.availability(specialist)
    slot = scheduling.open_slots(specialist)[0]
    consults.book(doctor, first.ref, slot.starts_at)
    [appt] = appointments()

    scheduling.release(appt)
    db.session.commit()

    assert blocks() == []
    [appt] = appointments()
    assert appt.cancelled_at is not None
    assert slot.starts_at in {s.starts_at for s in scheduling.open_slots(specialist)}
    consults.book(doctor, second.ref, slot.starts_at)
    assert [(a.consult_id, a.cancelled_at is None) for a in appointments()] == [
        (first.id, False), (second.id, True)]
    assert blocks() == [(specialist.id, slot.starts_at), (specialist.id, slot.starts_at + timedelta(minutes=15))]


def test_upcoming_for_each_role(make):
    alice, bob = make.rural(name="Alice"), make.rural(name="Bob")
    cardio, neuro = make.specialist(), make.specialist(specialty="neurology")
    coordinator = make.coordinator()
    a1 = make.scheduled(alice, cardio)
    a2 = make.scheduled(alice, neuro, specialty="neurology")
    b1 = make.scheduled(bob, cardio)
    dropped = make.scheduled(bob, neuro, specialty="neurology")
    consults.cancel(bob, dropped.ref, "Patient improved")
    make.accepted(alice, cardio)  # accepted but not booked: nothing upcoming

    def upcoming(user, **kw) -> list[str]:
        rows = scheduling.upcoming_for(user, **kw)
        assert [a.starts_at for a in rows] == sorted(a.starts_at for a in rows)  # soonest first
        return [a.consult.ref for a in rows]

    assert sorted(upcoming(alice)) == sorted([a1.ref, a2.ref])
    assert upcoming(bob) == [b1.ref]
    assert upcoming(cardio) == [a1.ref, b1.ref]  # a1 took the cardiologist's earlier slot
    assert upcoming(neuro) == [a2.ref]
    assert sorted(upcoming(coordinator)) == sorted([a1.ref, a2.ref, b1.ref])
    # an appointment that has ended is no longer upcoming
    first_end = min(c.appointment.ends_at for c in (a1, a2, b1))
    later = {c.ref for c in (a1, a2, b1) if c.appointment.ends_at > first_end}
    assert b1.ref in later
    assert set(upcoming(coordinator, now=first_end)) == later
    assert upcoming(coordinator, now=utcnow_plus(days=30)) == []


def utcnow_plus(**delta) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)
