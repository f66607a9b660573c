"""Availability and booking: a specialist is never double-booked."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise

from flask import current_app
from flask_babel import LazyString, lazy_gettext
from sqlalchemy import delete, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from ..audit.services import record
from ..consults import policy
from ..errors import Conflict, Forbidden, NotFound, ValidationFailed
from ..extensions import db
from ..i18n import N_
from ..models import (
    BLOCK_MINUTES,
    Appointment,
    AvailabilityException,
    AvailabilityWindow,
    BookedBlock,
    Consult,
    ConsultStatus,
    Role,
    User,
    utcnow,
)
from ..timefmt import zone

WEEKDAYS = [N_("Monday"), N_("Tuesday"), N_("Wednesday"), N_("Thursday"), N_("Friday"), N_("Saturday"),
            N_("Sunday")]


def weekday_name(weekday: int) -> LazyString:
    """A weekday's name (0 = Monday), translated when it is shown (a domain error's parameter)."""
    return lazy_gettext(WEEKDAYS[weekday])


@dataclass(frozen=True, order=True)
class Slot:
    """A bookable interval in UTC."""

    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class Window:
    """A weekly availability window in the specialist's local time."""

    weekday: int
    start_minute: int
    end_minute: int


def windows_of(specialist: User) -> list[AvailabilityWindow]:
    """The specialist's weekly windows, in week order."""
    return list(db.session.scalars(
        select(AvailabilityWindow)
        .where(AvailabilityWindow.specialist_id == specialist.id)
        .order_by(AvailabilityWindow.weekday, AvailabilityWindow.start_minute)
    ))


def _validate_windows(windows: list[Window]) -> None:
    slot = current_app.config["SLOT_MINUTES"]
    by_day: dict[int, list[Window]] = {}
    for w in windows:
        if not 0 <= w.weekday <= 6:
            raise ValidationFailed("Weekday must be Monday to Sunday.")
        if not (0 <= w.start_minute < w.end_minute <= 1440):
            raise ValidationFailed("On %(day)s the end must be after the start.", day=weekday_name(w.weekday))
        if w.start_minute % BLOCK_MINUTES or w.end_minute % BLOCK_MINUTES:
            raise ValidationFailed("Times must be on the quarter hour (%(day)s).", day=weekday_name(w.weekday))
        if w.end_minute - w.start_minute < slot:
            raise ValidationFailed("A window must fit at least one %(minutes)s-minute consult (%(day)s).",
                                   minutes=slot, day=weekday_name(w.weekday))
        by_day.setdefault(w.weekday, []).append(w)
    for day, items in by_day.items():
        items.sort(key=lambda w: w.start_minute)
        for a, b in pairwise(items):
            if b.start_minute < a.end_minute:
                raise ValidationFailed("Two windows overlap on %(day)s.", day=weekday_name(day))


def set_availability(specialist: User, windows: list[Window]) -> list[AvailabilityWindow]:
    """Replace the specialist's weekly availability (booked consults are kept)."""
    if specialist.role != Role.SPECIALIST:
        raise Forbidden("Only specialists publish availability.")
    _validate_windows(windows)
    db.session.execute(
        delete(AvailabilityWindow).where(AvailabilityWindow.specialist_id == specialist.id)
    )
    rows = [
        AvailabilityWindow(specialist_id=specialist.id, weekday=w.weekday,
                           start_minute=w.start_minute, end_minute=w.end_minute)
        for w in windows
    ]
    db.session.add_all(rows)
    record("availability.updated", actor=specialist, target=f"user:{specialist.id}",
           detail={"windows": len(rows)})
    db.session.commit()
    return rows


LEAVE, EXTRA = "leave", "extra"
# The days of slots a page offers to choose from (accept, book, reschedule): with a longer booking
# horizon a page still costs two weeks of slots, not the whole horizon.
SLOT_PAGE_DAYS = 14
MAX_LEAVE_DAYS = 366


def exceptions_of(specialist: User, *, since: date | None = None) -> list[AvailabilityException]:
    """The specialist's leave and extra hours that end on or after `since`, in date order."""
    query = select(AvailabilityException).where(AvailabilityException.specialist_id == specialist.id)
    if since is not None:
        query = query.where(AvailabilityException.last_day >= since)
    return list(db.session.scalars(
        query.order_by(AvailabilityException.first_day, AvailabilityException.start_minute)))


def add_leave(specialist: User, first_day: date, last_day: date, note: str = "") -> AvailabilityException:
    """Mark whole local days, first_day to last_day, as unavailable (booked consults are kept)."""
    if specialist.role != Role.SPECIALIST:
        raise Forbidden("Only specialists publish availability.")
    if last_day < first_day:
        raise ValidationFailed("The last day of leave must not be before the first.", fields={"last_day": "order"})
    if (last_day - first_day).days >= MAX_LEAVE_DAYS:
        raise ValidationFailed("Leave can span at most %(days)s days at a time.",
                               fields={"last_day": "range"}, days=MAX_LEAVE_DAYS)
    row = AvailabilityException(specialist_id=specialist.id, kind=LEAVE, first_day=first_day,
                                last_day=last_day, note=note.strip()[:120])
    db.session.add(row)
    db.session.flush()
    record("availability.leave_added", actor=specialist, target=f"user:{specialist.id}",
           detail={"first_day": first_day.isoformat(), "last_day": last_day.isoformat()})
    db.session.commit()
    return row


def add_extra_hours(specialist: User, day: date, start_minute: int, end_minute: int,
                    note: str = "") -> AvailabilityException:
    """Open one-off extra hours on a local date, on top of the weekly pattern."""
    if specialist.role != Role.SPECIALIST:
        raise Forbidden("Only specialists publish availability.")
    _validate_windows([Window(day.weekday(), start_minute, end_minute)])
    row = AvailabilityException(specialist_id=specialist.id, kind=EXTRA, first_day=day, last_day=day,
                                start_minute=start_minute, end_minute=end_minute, note=note.strip()[:120])
    db.session.add(row)
    db.session.flush()
    record("availability.extra_added", actor=specialist, target=f"user:{specialist.id}",
           detail={"day": day.isoformat(), "start_minute": start_minute, "end_minute": end_minute})
    db.session.commit()
    return row


def remove_exception(specialist: User, exception_id: int) -> None:
    """Delete one of the specialist's own exceptions."""
    row = db.session.get(AvailabilityException, exception_id)
    if row is None or row.specialist_id != specialist.id:
        raise NotFound("No such exception.")
    db.session.delete(row)
    record("availability.exception_removed", actor=specialist, target=f"user:{specialist.id}",
           detail={"kind": row.kind, "first_day": row.first_day.isoformat()})
    db.session.commit()


def _on_leave(leave: list[AvailabilityException], slot: Slot, tz) -> bool:
    days = {slot.starts_at.astimezone(tz).date(), (slot.ends_at - timedelta(microseconds=1)).astimezone(tz).date()}
    return any(x.first_day <= d <= x.last_day for x in leave for d in days)


def leave_covering(specialist: User, slot: Slot) -> AvailabilityException | None:
    """The specialist's leave that covers any part of the slot (in their zone), if any."""
    tz = zone(specialist.timezone)
    for x in exceptions_of(specialist, since=slot.starts_at.astimezone(tz).date() - timedelta(days=1)):
        if x.kind == LEAVE and _on_leave([x], slot, tz):
            return x
    return None


def _clock_runs_straight(cursor: datetime, s: datetime, length: timedelta) -> bool:
    """Whether the local wall time `cursor` exists and no DST change falls inside the slot.

    Around a DST change a wall-clock time may not exist (it maps to an instant an hour
    later) or a slot may span the change; either would put the slot partly outside the
    specialist's window, so such slots are not offered.
    """
    tz = cursor.tzinfo
    exists = s.astimezone(tz).replace(tzinfo=None) == cursor.replace(tzinfo=None)
    last = s + length - timedelta(microseconds=1)
    return exists and s.astimezone(tz).utcoffset() == last.astimezone(tz).utcoffset()


def _candidate_slots(specialist: User, start: datetime, end: datetime) -> list[Slot]:
    return list(_iter_candidate_slots(specialist, start, end))


def _iter_candidate_slots(specialist: User, start: datetime, end: datetime,
                          *, chunk_days: int = 7) -> Iterator[Slot]:
    """The slots of the specialist's availability between start and end, in time order, made lazily.

    Day by day in the specialist's zone; the exceptions are read `chunk_days` at a time, so a caller
    that stops after a page of slots pays for that page, not for the whole horizon.
    """
    tz = zone(specialist.timezone)
    length = timedelta(minutes=current_app.config["SLOT_MINUTES"])
    windows = windows_of(specialist)
    if not windows and not db.session.scalar(
            select(AvailabilityException.id).where(AvailabilityException.specialist_id == specialist.id,
                                                   AvailabilityException.kind == EXTRA).limit(1)):
        return
    first_day: date = start.astimezone(tz).date() - timedelta(days=1)
    last_day: date = end.astimezone(tz).date() + timedelta(days=1)
    chunk_start = first_day
    while chunk_start <= last_day:
        chunk_end = min(last_day, chunk_start + timedelta(days=chunk_days - 1))
        exceptions = [x for x in exceptions_of(specialist, since=chunk_start) if x.first_day <= chunk_end]
        leave = [x for x in exceptions if x.kind == LEAVE]
        extra: dict[date, list[Window]] = {}
        for x in exceptions:
            if x.kind == EXTRA and x.start_minute is not None and x.end_minute is not None:
                extra.setdefault(x.first_day, []).append(Window(x.first_day.weekday(), x.start_minute, x.end_minute))
        day = chunk_start
        while day <= chunk_end:
            slots: set[Slot] = set()
            for w in [*windows, *extra.get(day, [])]:
                if w.weekday != day.weekday():
                    continue
                local_start = datetime.combine(day, time(0), tzinfo=tz) + timedelta(minutes=w.start_minute)
                local_end = datetime.combine(day, time(0), tzinfo=tz) + timedelta(minutes=w.end_minute)
                cursor = local_start
                while cursor + length <= local_end:
                    s = cursor.astimezone(UTC)
                    if (start <= s and s + length <= end and _clock_runs_straight(cursor, s, length)
                            and not _on_leave(leave, Slot(s, s + length), tz)):
                        slots.add(Slot(s, s + length))
                    cursor += length
            yield from sorted(slots)  # one local day's slots all come after the day before's
            day += timedelta(days=1)
        chunk_start = chunk_end + timedelta(days=1)


def _booked_blocks(specialist: User, start: datetime, end: datetime) -> set[datetime]:
    return set(db.session.scalars(
        select(BookedBlock.block_start).where(
            BookedBlock.specialist_id == specialist.id,
            BookedBlock.block_start >= start - timedelta(days=1),
            BookedBlock.block_start < end,
        )
    ))


def _blocks_of(slot: Slot) -> list[datetime]:
    blocks, cursor = [], slot.starts_at
    while cursor < slot.ends_at:
        blocks.append(cursor)
        cursor += timedelta(minutes=BLOCK_MINUTES)
    return blocks


def open_slots(specialist: User, *, now: datetime | None = None, days: int | None = None,
               limit: int | None = None) -> list[Slot]:
    """Free slots inside the specialist's availability over the booking horizon, the first `limit` of them.

    Made lazily: with a limit, the work is that of the slots returned, whatever the horizon.
    """
    now = now or utcnow()
    start = now + timedelta(minutes=current_app.config["BOOKING_MIN_LEAD_MINUTES"])
    end = now + timedelta(days=days or current_app.config["BOOKING_HORIZON_DAYS"])
    found: list[Slot] = []
    taken: set[datetime] = set()
    taken_until = start
    for slot in _iter_candidate_slots(specialist, start, end):
        if slot.ends_at > taken_until:  # read the booked blocks a week at a time, as the slots get there
            taken_until = min(end, max(slot.ends_at, taken_until) + timedelta(days=7))
            taken |= _booked_blocks(specialist, slot.starts_at, taken_until)
        if not any(b in taken for b in _blocks_of(slot)):
            found.append(slot)
            if limit is not None and len(found) >= limit:
                break
    return found


def page_days() -> int:
    """How many days of slots a page lists: two weeks, or the booking horizon if shorter."""
    return min(SLOT_PAGE_DAYS, current_app.config["BOOKING_HORIZON_DAYS"])


def is_bookable(specialist: User, starts_at: datetime, *, now: datetime | None = None) -> Slot:
    """The slot starting at starts_at if it lies in the specialist's availability."""
    now = now or utcnow()
    starts_at = starts_at.astimezone(UTC)
    lead = now + timedelta(minutes=current_app.config["BOOKING_MIN_LEAD_MINUTES"])
    horizon = now + timedelta(days=current_app.config["BOOKING_HORIZON_DAYS"])
    if starts_at < lead:
        raise ValidationFailed("That time has passed or is too soon; choose a later slot.")
    if starts_at > horizon:
        raise ValidationFailed("That time is beyond the booking horizon.")
    length = timedelta(minutes=current_app.config["SLOT_MINUTES"])
    if leave_covering(specialist, Slot(starts_at, starts_at + length)) is not None:
        raise ValidationFailed("The specialist is on leave then; choose another day.")
    for slot in _candidate_slots(specialist, starts_at, starts_at + timedelta(days=1)):
        if slot.starts_at == starts_at:
            return slot
    raise ValidationFailed("That time is outside the specialist's availability.")


SLOT_TAKEN = N_("That time has just been booked for another consult. Choose another time.")


def reserve(consult: Consult, specialist: User, starts_at: datetime, booked_by: User) -> Appointment:
    """Hold a slot for the consult in the current transaction (no commit).

    Raises Conflict when another appointment holds any part of the slot, or another
    transaction is taking it right now: a loser fails at once instead of queueing behind the
    winner's transaction (see _claim). The booked_blocks primary key stays the final judge.
    """
    starts_at = starts_at.astimezone(UTC)
    blocks = _blocks_of(Slot(starts_at, starts_at + timedelta(minutes=current_app.config["SLOT_MINUTES"])))
    _claim(specialist, blocks)  # first: a loser is refused before the availability is worked out
    slot = is_bookable(specialist, starts_at)
    appointment = Appointment(
        consult_id=consult.id,
        specialist_id=specialist.id,
        starts_at=slot.starts_at,
        ends_at=slot.ends_at,
        booked_by_id=booked_by.id,
    )
    appointment.blocks = [BookedBlock(specialist_id=specialist.id, block_start=b) for b in blocks]
    postgres = _dialect() == "postgresql"
    try:
        # begin_nested() first flushes what is pending, so the appointment is added inside
        # the savepoint: a clash then rolls back only the savepoint, not the caller's work.
        with db.session.begin_nested():
            if postgres:  # a backstop: no insert waits long on a key another transaction holds
                previous = db.session.scalar(
                    text("SELECT current_setting('lock_timeout'), set_config('lock_timeout', :t, true)"),
                    {"t": f"{current_app.config['BOOKING_LOCK_TIMEOUT_MS']}ms"})
            db.session.add(appointment)
            db.session.flush()
        if postgres:
            db.session.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": previous})
    except IntegrityError:
        raise Conflict(SLOT_TAKEN) from None
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        raise Conflict(SLOT_TAKEN) from None
    return appointment


LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL: lock_timeout expired


def _dialect() -> str:
    return db.session.get_bind().dialect.name


def _claim(specialist: User, blocks: list[datetime]) -> None:
    """Fail fast (Conflict) when a block of the slot is booked, or being booked by another transaction.

    First a plain read of the committed blocks (it never waits). Then, on PostgreSQL, a
    transaction-scoped advisory lock per (specialist, 15-minute block), taken with
    pg_try_advisory_xact_lock, which never waits either: whoever holds one is inserting that
    block, so the others are refused at once rather than waiting on the unique index until the
    holder commits. Locks are released at commit or rollback, after the rows became visible,
    so a later attempt sees the booked blocks. (If the holder then rolls back, the slot was
    refused to the others needlessly; they may choose it again.)
    """
    taken = db.session.scalar(select(BookedBlock.block_start).where(
        BookedBlock.specialist_id == specialist.id, BookedBlock.block_start.in_(blocks)).limit(1))
    if taken is not None:
        raise Conflict(SLOT_TAKEN)
    if _dialect() != "postgresql":
        return  # SQLite: one writer at a time; the primary key decides
    keys = [int(b.timestamp()) // (BLOCK_MINUTES * 60) for b in blocks]
    claimed = db.session.scalar(text(
        "SELECT count(*) FROM unnest(CAST(:keys AS integer[])) AS k "
        "WHERE pg_try_advisory_xact_lock(CAST(:specialist AS integer), k)"),
        {"keys": keys, "specialist": specialist.id})
    if claimed != len(keys):
        raise Conflict(SLOT_TAKEN)


def release(appointment: Appointment, *, reason: str | None = None, by: User | None = None) -> None:
    """End an appointment (cancelled or rescheduled) and free its blocks (no commit).

    The freed blocks are deleted at once, so a new appointment taken in the same transaction
    may reuse them (e.g. a reschedule to a slot that overlaps the old one).
    """
    appointment.cancelled_at = utcnow()
    appointment.end_reason = reason[:500] if reason else None
    appointment.ended_by_id = by.id if by is not None else None
    appointment.blocks.clear()
    db.session.flush()


def history_of(consult: Consult) -> list[Appointment]:
    """Every appointment the consult has had, the current one last (for its visible history)."""
    return list(db.session.scalars(
        select(Appointment).where(Appointment.consult_id == consult.id)
        .order_by(Appointment.created_at, Appointment.id)))


def upcoming_for(user: User, *, now: datetime | None = None) -> list[Appointment]:
    """The user's booked consults that have not ended, soonest first."""
    now = now or utcnow()
    query = (
        select(Appointment)
        .join(Consult, Consult.id == Appointment.consult_id)
        .where(Appointment.cancelled_at.is_(None), Appointment.ends_at > now,
               Consult.status == ConsultStatus.SCHEDULED)
        .order_by(Appointment.starts_at)
    )
    if user.role in (Role.SPECIALIST, Role.RURAL_DOCTOR):
        query = query.where(policy.consults_of(user))  # every consult they take part in
    return list(db.session.scalars(query))
