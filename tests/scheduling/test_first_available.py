"""First available specialist: the set-based query equals a brute force over open_slots of every eligible
specialist, on small random worlds (time zones with and without DST, leave, extra hours, bookings,
accounts that are not approved, the lead time and the horizon)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import insert

from webapp.consults.matching import eligible_specialists, first_available_for
from webapp.extensions import db
from webapp.models import (
    AccountStatus,
    Appointment,
    AvailabilityException,
    AvailabilityWindow,
    BookedBlock,
)
from webapp.scheduling import services as scheduling
from webapp.scheduling.first_available import day_segments, first_available

ZONES = ["Asia/Shanghai", "Asia/Shanghai", "Europe/Berlin", "America/New_York", "Asia/Kathmandu"]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# now: a plain stretch, the spring changes (US 14 March, EU 28 March 2027) and the autumn ones
# (EU 31 October, US 7 November 2027) inside a 21-day horizon
NOWS = [utc(2026, 12, 7, 3, 7, 30), utc(2027, 3, 10, 16, 52), utc(2027, 10, 25, 22, 14, 5)]


def _windows(rng: random.Random) -> list[scheduling.Window]:
    windows = []
    for day in range(7):
        minute = rng.randrange(0, 20) * 60 + rng.choice([0, 15, 30, 45])
        for _ in range(rng.randrange(0, 3)):
            end = minute + rng.randrange(2, 16) * 15
            if end > 1440:
                break
            windows.append(scheduling.Window(day, minute, end))
            minute = end + rng.randrange(0, 8) * 15
    return windows


def _world(make, rng: random.Random, now: datetime):
    home, partner, other = make.facility(), make.facility(), make.facility()
    make.partnership(partner, home)
    requester = make.rural(facility=home)
    specialists = []
    for i in range(rng.randrange(6, 11)):
        status = rng.choice([AccountStatus.APPROVED] * 5 + [AccountStatus.PENDING, AccountStatus.SUSPENDED])
        specialty = "cardiology" if i % 5 else rng.choice(["cardiology", "neurology"])
        s = make.specialist(facility=rng.choice([partner, other, other]), timezone=rng.choice(ZONES),
                            status=status, specialty=specialty)
        db.session.add_all(AvailabilityWindow(specialist_id=s.id, weekday=w.weekday, start_minute=w.start_minute,
                                              end_minute=w.end_minute) for w in _windows(rng))
        first = now.date()
        for _ in range(rng.randrange(0, 3)):  # leave
            day = first + timedelta(days=rng.randrange(-2, 22))
            db.session.add(AvailabilityException(specialist_id=s.id, kind="leave", first_day=day,
                                                 last_day=day + timedelta(days=rng.randrange(0, 3))))
        for _ in range(rng.randrange(0, 4)):  # extra hours, sometimes over a weekly window
            day = first + timedelta(days=rng.randrange(-1, 22))
            start = rng.randrange(0, 88) * 15
            db.session.add(AvailabilityException(specialist_id=s.id, kind="extra", first_day=day, last_day=day,
                                                 start_minute=start,
                                                 end_minute=min(1440, start + rng.randrange(2, 12) * 15)))
        specialists.append(s)
    db.session.commit()
    consult = make.draft(requester)
    for s in specialists:  # book about 30 % of the open slots, some half a slot off the grid
        for slot in scheduling.open_slots(s, now=now, days=21):
            if rng.random() < 0.3:
                shift = timedelta(minutes=rng.choice([0, 0, 0, 15]))
                blocks = [slot.starts_at + shift, slot.starts_at + shift + timedelta(minutes=15)]
                if db.session.get(BookedBlock, (s.id, blocks[0])) or db.session.get(BookedBlock, (s.id, blocks[1])):
                    continue
                appointment = Appointment(consult_id=consult.id, specialist_id=s.id, starts_at=blocks[0],
                                          ends_at=blocks[0] + timedelta(minutes=30), booked_by_id=s.id)
                db.session.add(appointment)
                db.session.flush()
                db.session.execute(insert(BookedBlock), [
                    {"specialist_id": s.id, "block_start": b, "appointment_id": appointment.id} for b in blocks])
    db.session.commit()
    return requester, consult


def _brute_force(consult, now: datetime) -> list[tuple[datetime, bool, int]]:
    return [(slot.starts_at, c.is_partner, c.specialist.id)
            for c in eligible_specialists(consult) for slot in scheduling.open_slots(c.specialist, now=now)]


@pytest.mark.parametrize("seed", range(6))
def test_first_available_equals_a_brute_force_over_open_slots(make, app, monkeypatch, seed):
    monkeypatch.setitem(app.config, "BOOKING_HORIZON_DAYS", 21)
    rng = random.Random(seed)
    now = NOWS[seed % len(NOWS)] + timedelta(hours=rng.randrange(0, 48))
    _, consult = _world(make, rng, now)
    truth = _brute_force(consult, now)
    assert len(truth) > 20, "the world should offer some slots"
    overall = sorted(truth, key=lambda t: (t[0], not t[1], t[2]))
    partner_first = sorted(truth, key=lambda t: (not t[1], t[0], t[2]))
    for limit in (1, 7, 40, len(truth) + 5):
        for prefer, expected in ((False, overall), (True, partner_first)):
            got = first_available_for(consult, now=now, prefer_partner=prefer, limit=limit)
            assert [(f.slot.starts_at, f.is_partner, f.specialist.id) for f in got] == expected[:limit], (
                seed, limit, prefer)
            assert all(f.slot.ends_at - f.slot.starts_at == timedelta(minutes=30) for f in got)


def test_a_specialist_who_is_the_requester_or_not_approved_is_never_offered(make):
    me = make.specialist(specialty="cardiology")
    other = make.specialist(specialty="cardiology", status=AccountStatus.SUSPENDED)
    for s in (me, other):
        make.availability(s)
    now = utc(2026, 12, 7, 3)
    assert first_available("cardiology", exclude_id=me.id, now=now) == []
    assert [f.specialist for f in first_available("cardiology", now=now, limit=1)] == [me]
    assert first_available("", now=now) == [] and first_available("cardiology", now=now, limit=0) == []


def test_lead_time_and_horizon_bound_the_answer(make, app, monkeypatch):
    specialist = make.specialist()
    make.availability(specialist)
    now = utc(2026, 12, 7, 3, 0, 1)  # the lead time ends 03:15:01: the first slot is 03:30
    assert first_available("cardiology", now=now, limit=1)[0].slot.starts_at == utc(2026, 12, 7, 3, 30)
    monkeypatch.setitem(app.config, "BOOKING_HORIZON_DAYS", 1)
    slots = first_available("cardiology", now=now, limit=1000)
    assert slots[-1].slot.ends_at <= now + timedelta(days=1) < slots[-1].slot.ends_at + timedelta(minutes=30)
    assert [f.slot for f in slots] == scheduling.open_slots(specialist, now=now)


def test_day_segments_follow_the_clock_changes():
    assert day_segments("Asia/Shanghai", date(2027, 3, 28)) == ((0, 1440, day_segments(
        "Asia/Shanghai", date(2027, 3, 28))[0][2]),)
    spring = day_segments("Europe/Berlin", date(2027, 3, 28))  # 02:00 -> 03:00
    assert [(a, b) for a, b, _ in spring] == [(0, 120), (180, 1440)]
    autumn = day_segments("Europe/Berlin", date(2027, 10, 31))  # 03:00 -> 02:00 (the first 02:xx kept)
    assert [(a, b) for a, b, _ in autumn] == [(0, 180), (180, 1440)]
    assert autumn[1][2] - autumn[0][2] == 60


def test_a_slot_far_in_the_horizon_is_found_month_by_month(make, app, monkeypatch):
    monkeypatch.setitem(app.config, "BOOKING_HORIZON_DAYS", 200)
    now = utc(2026, 12, 7, 3)
    specialist = make.specialist(timezone="Europe/Berlin")
    far = date(2027, 5, 20)  # 164 days ahead, after the spring change
    scheduling.add_extra_hours(specialist, far, 23 * 60, 24 * 60)
    found = first_available("cardiology", now=now, limit=5)
    assert [f.slot for f in found] == scheduling.open_slots(specialist, now=now) == [
        scheduling.Slot(utc(2027, 5, 20, 21), utc(2027, 5, 20, 21, 30)),
        scheduling.Slot(utc(2027, 5, 20, 21, 30), utc(2027, 5, 20, 22))]
    scheduling.add_leave(specialist, far, far)
    assert first_available("cardiology", now=now) == []
