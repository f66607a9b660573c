"""The earliest free slots across every eligible specialist of a specialty, by one set-based query.

No loop over specialists: the weekly windows and the extra hours of every eligible specialist are
expanded in SQL against a small calendar (one row per time zone, local day and stretch of the day
with one UTC offset, built here in Python from the zone database) and a number series (the slots of
a window), the candidates are ordered by start, and leave and booked blocks are checked by index on
the way (NOT EXISTS). The horizon is scanned in growing steps (3 hours, a day, a week, then a month at
a time), so the usual answer — within hours — reads only the first step. Works on SQLite and
PostgreSQL alike; the rules are those of `services.open_slots` (time zones and DST, leave, extra
hours, minimum lead time, horizon, existing appointments, approved specialists only).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import (
    Date,
    Integer,
    String,
    and_,
    bindparam,
    exists,
    func,
    literal,
    select,
    true,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import joinedload
from sqlalchemy.sql.functions import FunctionElement

from ..extensions import db
from ..models import (
    AccountStatus,
    AvailabilityException,
    AvailabilityWindow,
    BookedBlock,
    Role,
    User,
    utcnow,
)
from ..models.types import UTCDateTime
from ..timefmt import zone
from .services import EXTRA, LEAVE, Slot

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
QUARTER = 15
# How far each step of the scan reaches beyond the previous one (then the last, again and again).
STEPS = (timedelta(hours=3), timedelta(days=1), timedelta(days=7), timedelta(days=31))


@dataclass(frozen=True)
class FreeSlot:
    """A free slot of one specialist, and whether they work at the requester's partner hospital."""

    specialist: User
    slot: Slot
    is_partner: bool


class _minutes_to_timestamp(FunctionElement):
    """Minutes since 1970-01-01 UTC as the database's stored UTC timestamp (to compare with a column)."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(_minutes_to_timestamp, "postgresql")
def _pg_timestamp(element, compiler, **kw) -> str:
    return f"to_timestamp(({compiler.process(element.clauses, **kw)}) * 60)"


@compiles(_minutes_to_timestamp)
def _sqlite_timestamp(element, compiler, **kw) -> str:
    # SQLAlchemy stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC, see UTCDateTime)
    return (f"(strftime('%Y-%m-%d %H:%M:%S', ({compiler.process(element.clauses, **kw)}) * 60, 'unixepoch')"
            " || '.000000')")


def _minutes(dt: datetime) -> int:
    """Whole minutes since the epoch (dt on a minute)."""
    return int((dt - EPOCH).total_seconds()) // 60


def _ceil_minutes(dt: datetime) -> int:
    return -((EPOCH - dt) // timedelta(minutes=1))


@lru_cache(maxsize=50_000)
def day_segments(tz_name: str, day: date) -> tuple[tuple[int, int, int], ...]:
    """The stretches of a local day with one UTC offset: (first minute, end minute, the epoch minute of
    local midnight at that offset). A slot lies in one stretch or is not offered (as in open_slots:
    a wall time that does not exist, or a DST change inside the slot, is never offered)."""
    tz: ZoneInfo = zone(tz_name)
    midnight = datetime.combine(day, time(0), tzinfo=tz)
    start = midnight.astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    if end - start == timedelta(days=1) and start.astimezone(tz).utcoffset() == (
            end - timedelta(microseconds=1)).astimezone(tz).utcoffset():
        return ((0, 1440, _minutes(start)),)
    segments: list[list[int]] = []  # a DST day: look at every quarter hour (twice a year)
    for minute in range(0, 1440, QUARTER):
        wall = midnight + timedelta(minutes=minute)
        instant = wall.astimezone(UTC)
        back = instant.astimezone(tz)
        if back.replace(tzinfo=None) != wall.replace(tzinfo=None):
            continue  # skipped by the clock
        base = _minutes(instant) - minute
        if segments and segments[-1][1] == minute and segments[-1][2] == base:
            segments[-1][1] = minute + QUARTER
        else:
            segments.append([minute, minute + QUARTER, base])
    return tuple((a, b, c) for a, b, c in segments)


def _calendar(zones: Iterable[str], lo: int, cut: int, hi: int, length: int) -> list[tuple]:
    """Calendar rows (zone, day, weekday, first start, last end, start cut, base) for slot starts in
    epoch minutes [lo, cut) that end by hi, in local minutes of each stretch."""
    rows = []
    for name in zones:
        tz = zone(name)
        first = (EPOCH + timedelta(minutes=lo)).astimezone(tz).date() - timedelta(days=1)
        last = (EPOCH + timedelta(minutes=cut)).astimezone(tz).date() + timedelta(days=1)
        day = first
        while day <= last:
            for seg_lo, seg_hi, base in day_segments(name, day):
                first_start = max(seg_lo, lo - base)
                last_end = min(seg_hi, hi - base)
                start_cut = min(cut - base, last_end - length + 1)
                if first_start < start_cut:
                    rows.append((name, day, day.weekday(), first_start, last_end, start_cut, base))
            day += timedelta(days=1)
    return rows


def _eligible(who: str):
    """The eligible specialists (parameters: specialty, exclude, partners); `who`: all, partner or other."""
    clauses = [User.role == Role.SPECIALIST, User.status == AccountStatus.APPROVED,
               User.specialty == bindparam("specialty", type_=String), User.id != bindparam("exclude", type_=Integer)]
    partners = bindparam("partners", expanding=True, type_=Integer)
    if who == "partner":
        clauses.append(User.facility_id.in_(partners))
    elif who == "other":
        clauses.append(User.facility_id.not_in(partners) | User.facility_id.is_(None))
    return clauses


def _scan(who: str, params: dict, zones: list[str], start: int, end: int, limit: int,
          length: int) -> list[tuple[int, int, bool]]:
    """(specialist id, start minute, is partner) of the first `limit` free slots, scanning in steps."""
    found: list[tuple[int, int, bool]] = []
    seen: set[tuple[int, int]] = set()
    lo = start
    steps = iter(STEPS)
    dialect = db.session.get_bind().dialect.name
    while lo + length <= end and len(found) < limit:
        step = next(steps, STEPS[-1])  # then a month at a time (the calendar's parameters stay few)
        cut = min(end, lo + int(step.total_seconds()) // 60)
        rows = _calendar(zones, lo, cut, end, length)
        if rows:
            values = {f"cal_{i}_{j}": value for i, row in enumerate(rows) for j, value in enumerate(row)}
            statement = _query(len(rows), who, length, dialect)
            for sid, smin, partner in db.session.execute(statement, {**params, **values, "fetch": 2 * limit}):
                if (sid, smin) not in seen:  # extra hours may repeat a weekly window's slot
                    seen.add((sid, smin))
                    found.append((sid, smin, bool(partner)))
                    if len(found) >= limit:
                        break
        lo = cut
    return found


@lru_cache(maxsize=256)
def _query(count: int, who: str, length: int, dialect: str):
    """The statement for a calendar of `count` rows, built once and kept: every value is a parameter
    (cal_<row>_<column>, specialty, exclude, partners, fetch), so SQLAlchemy compiles it once too."""
    # The calendar as a UNION ALL of one-row SELECTs of parameters (a VALUES clause with data is never
    # cached by SQLAlchemy: each query would be compiled anew, 20-50 ms).
    names = ("tz", "day", "weekday", "first_start", "last_end", "start_cut", "base")
    types = (String, Date, Integer, Integer, Integer, Integer, Integer)
    cal = union_all(*[select(*[bindparam(f"cal_{i}_{j}", type_=types[j]).label(names[j]) for j in range(7)])
                      for i in range(count)]).cte("cal")
    postgres = dialect == "postgresql"
    numbers = None if postgres else union_all(
        *[select(literal(k, Integer).label("k")) for k in range(1440 // length + 1)]).cte("numbers")
    partner = User.facility_id.in_(bindparam("partners", expanding=True, type_=Integer)).label("partner")
    eligible = _eligible(who)
    def expand(start_minute, end_minute, table, on):
        query = select(User.id).select_from(User).join(cal, cal.c.tz == User.timezone).join(table, on)
        if postgres:  # only the window's slots inside the step: generate_series from the first to the last
            first = func.greatest(0, (cal.c.first_start - start_minute + length - 1) // length, type_=Integer)
            last = func.least(end_minute - length, cal.c.start_cut - 1, cal.c.last_end - length,
                              type_=Integer) - start_minute
            series = (func.generate_series(first, last // length).table_valued("k")
                      .render_derived(name="numbers").lateral())
            query, k = query.join(series, true()), series.c.k
        else:  # a number series joined (SQLite has no generate_series)
            query, k = query.join(numbers, start_minute + numbers.c.k * length + length <= end_minute), numbers.c.k
        begin = start_minute + k * length
        return (query.with_only_columns(User.id.label("sid"), (cal.c.base + begin).label("smin"),
                                        cal.c.day.label("day"), partner, maintain_column_froms=False)
                .where(*eligible, begin >= cal.c.first_start, begin < cal.c.start_cut,
                       begin + length <= cal.c.last_end, begin + length <= end_minute))

    weekly = expand(AvailabilityWindow.start_minute, AvailabilityWindow.end_minute, AvailabilityWindow,
                    and_(AvailabilityWindow.specialist_id == User.id, AvailabilityWindow.weekday == cal.c.weekday,
                         AvailabilityWindow.start_minute < cal.c.start_cut,
                         AvailabilityWindow.end_minute > cal.c.first_start))
    extra = expand(AvailabilityException.start_minute, AvailabilityException.end_minute, AvailabilityException,
                   and_(AvailabilityException.specialist_id == User.id, AvailabilityException.kind == EXTRA,
                        AvailabilityException.first_day == cal.c.day))
    # Ordered first, filtered after (OFFSET 0 keeps PostgreSQL from merging the two): the checks run on
    # the earliest candidates only, until enough are free.
    candidates = union_all(weekly, extra).subquery("c")
    ordered = (select(candidates).order_by(candidates.c.smin, candidates.c.partner.desc(), candidates.c.sid)
               .offset(0).subquery("o"))
    leave = exists().where(AvailabilityException.specialist_id == ordered.c.sid,
                           AvailabilityException.kind == LEAVE,
                           AvailabilityException.first_day <= ordered.c.day,
                           AvailabilityException.last_day >= ordered.c.day)
    booked = exists().where(BookedBlock.specialist_id == ordered.c.sid,
                            BookedBlock.block_start >= _minutes_to_timestamp(ordered.c.smin),
                            BookedBlock.block_start < _minutes_to_timestamp(ordered.c.smin + length))
    # twice the limit: the same slot may come from a weekly window and from extra hours
    return (select(ordered.c.sid, ordered.c.smin, ordered.c.partner).where(~leave, ~booked)
            .limit(bindparam("fetch", type_=Integer)))


def first_available(specialty: str, *, facility_id: int | None = None, exclude_id: int | None = None,
                    now: datetime | None = None, prefer_partner: bool = True, limit: int = 3) -> list[FreeSlot]:
    """The earliest free slots across every approved specialist of the specialty, with the specialist.

    facility_id is the requester's facility: its partner hospitals' specialists are marked. With
    prefer_partner the partner hospitals' earliest slots come first (then the others'); without it,
    the earliest overall (a partner first when two start at the same time). exclude_id leaves out
    one user (the requester, when they are a specialist themselves).
    """
    from ..consults.matching import partner_facility_ids

    if limit <= 0 or not specialty:
        return []
    now = now or utcnow()
    config = current_app.config
    length = config["SLOT_MINUTES"]
    start = _ceil_minutes(now + timedelta(minutes=config["BOOKING_MIN_LEAD_MINUTES"]))
    end = (now + timedelta(days=config["BOOKING_HORIZON_DAYS"]) - EPOCH) // timedelta(minutes=1)
    partners = sorted(partner_facility_ids(facility_id))
    params = {"specialty": specialty, "exclude": -1 if exclude_id is None else exclude_id, "partners": partners}
    zones = sorted(set(db.session.scalars(select(User.timezone).where(*_eligible("all")).distinct(), params)))
    if not zones:
        return []
    if prefer_partner and partners:
        found = _scan("partner", params, zones, start, end, limit, length)
        if len(found) < limit:
            found += _scan("other", params, zones, start, end, limit - len(found), length)
    else:
        found = _scan("all", params, zones, start, end, limit, length)
    users = {u.id: u for u in db.session.scalars(  # with their hospitals: the pages name them
        select(User).options(joinedload(User.facility)).where(User.id.in_({sid for sid, _, _ in found})))}
    return [FreeSlot(users[sid], Slot(EPOCH + timedelta(minutes=smin), EPOCH + timedelta(minutes=smin + length)),
                     partner) for sid, smin, partner in found]
