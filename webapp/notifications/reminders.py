"""Reminders before a booked time and missed response-time targets, fired by the delivery worker.

Nothing is scheduled in memory: what is due is read from the database on every worker pass
(`scan_due(now)`), through partial indexes ordered by due time, and each reminder or overdue
flag is claimed with a guarded `UPDATE ... WHERE <sent column> IS NULL` in the same transaction
as its notifications, so it fires once per booking or consult even with several workers.
A reschedule makes a new appointment row (its reminders are unsent); a cancelled one is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from flask_babel import ngettext
from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute

from ..extensions import db
from ..i18n import N_, speaking, translate
from ..models import Appointment, Consult, ConsultStatus, Urgency
from ..models.user import specialty_label
from .services import coordinators, notify, parties

REMINDERS: tuple[tuple[str, timedelta, InstrumentedAttribute], ...] = (
    ("reminder.day", timedelta(hours=24), Appointment.reminded_day_at),
    ("reminder.soon", timedelta(minutes=15), Appointment.reminded_soon_at),
)
DEFAULT_TARGETS = {"emergency": 15, "urgent": 240, "routine": 2880}


def parse_targets(spec: str | None) -> dict[str, int]:
    """Minutes per urgency from "emergency=15,urgent=240,routine=2880" (missing ones keep the default)."""
    targets = dict(DEFAULT_TARGETS)
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        name = name.strip().lower()
        if name not in DEFAULT_TARGETS or not value.strip().isdigit() or int(value) <= 0:
            raise ValueError(f"RESPONSE_TARGET_MINUTES: expected urgency=minutes, got {part.strip()!r}")
        targets[name] = int(value)
    return targets


def target(urgency: Urgency | str) -> timedelta:
    """The response-time target of an urgency (RESPONSE_TARGET_MINUTES)."""
    value = urgency.value if isinstance(urgency, Urgency) else str(urgency)
    configured = current_app.config["RESPONSE_TARGET_MINUTES"]
    targets = parse_targets(configured) if isinstance(configured, str) else configured
    return timedelta(minutes=targets[value])


def describe(minutes: float) -> str:
    """A duration for people, in the current language: "15 minutes", "4 hours", "2 days"."""
    minutes = round(minutes)
    if minutes % 1440 == 0:
        return ngettext("%(num)s day", "%(num)s days", minutes // 1440)
    if minutes % 60 == 0 or minutes > 180:
        return ngettext("%(num)s hour", "%(num)s hours", round(minutes / 60))
    return ngettext("%(num)s minute", "%(num)s minutes", minutes)


EXPECTED = {
    "emergency": N_("A specialist in %(specialty)s usually answers an emergency request within %(time)s."),
    "urgent": N_("A specialist in %(specialty)s usually answers an urgent request within %(time)s."),
    "routine": N_("A specialist in %(specialty)s usually answers a routine request within %(time)s."),
}
EXPECTED_ANY = {
    "emergency": N_("A specialist usually answers an emergency request within %(time)s."),
    "urgent": N_("A specialist usually answers an urgent request within %(time)s."),
    "routine": N_("A specialist usually answers a routine request within %(time)s."),
}


def expected_response(consult: Consult) -> str:
    """ "A specialist in Cardiology usually answers an urgent request within 4 hours." for this consult."""
    time = describe(target(consult.urgency).total_seconds() / 60)
    if consult.specialty:
        return translate(EXPECTED[consult.urgency.value],
                         {"specialty": specialty_label(consult.specialty), "time": time})
    return translate(EXPECTED_ANY[consult.urgency.value], {"time": time})


def due_at(consult: Consult) -> datetime | None:
    """When a requested consult misses its response target (None when not waiting for acceptance)."""
    if consult.status != ConsultStatus.REQUESTED or consult.submitted_at is None:
        return None
    return consult.submitted_at + target(consult.urgency)


def targets_sentence() -> str:
    """The targets of every urgency, for the request form."""
    minutes = {u: target(u).total_seconds() / 60 for u in (Urgency.EMERGENCY, Urgency.URGENT, Urgency.ROUTINE)}
    return translate(N_("A specialist usually answers an emergency request within %(emergency)s, an urgent one "
                        "within %(urgent)s and a routine one within %(routine)s."),
                     {"emergency": describe(minutes[Urgency.EMERGENCY]), "urgent": describe(minutes[Urgency.URGENT]),
                      "routine": describe(minutes[Urgency.ROUTINE])})


def time_left(consult: Consult, now: datetime | None = None) -> str | None:
    """ "3 h 10 min left" or "overdue" for a request waiting for acceptance; None otherwise."""
    from ..models import utcnow
    from ..timefmt import format_duration

    due = due_at(consult)
    if due is None:
        return None
    left = (due - (now or utcnow())).total_seconds()
    if consult.overdue_at is not None or left <= 0:
        return "overdue"
    return translate(N_("%(time)s left"), {"time": format_duration(left)})


def _claim(column: InstrumentedAttribute, row_id: int, now: datetime, model: Any, *still: Any) -> bool:
    """Set the sent column if nobody has (and the row is `still` as read): True for the one caller that did."""
    result = db.session.execute(
        update(model).where(model.id == row_id, column.is_(None), *still).values({column.key: now})
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def _each(ids: list[int], fire: Callable[[int], bool]) -> int:
    fired = 0
    for row_id in ids:
        try:
            if fire(row_id):
                fired += 1
            db.session.commit()
        except Exception:
            db.session.rollback()
            raise
    return fired


def scan_due(now: datetime, limit: int = 200) -> dict[str, int]:
    """Fire every reminder and missed response target due at `now`; returns counts by kind.

    Each one is claimed and notified in its own short transaction (commit once per item).
    """
    counts: dict[str, int] = {}
    for kind, before, column in REMINDERS:
        ids = list(db.session.scalars(
            select(Appointment.id).where(
                column.is_(None), Appointment.cancelled_at.is_(None),
                Appointment.starts_at <= now + before, Appointment.starts_at > now)
            .order_by(Appointment.starts_at).limit(limit)))
        db.session.rollback()  # end the read; each claim is its own transaction
        n = _each(ids, lambda i, kind=kind, column=column: _remind(i, kind, column, now))
        if n:
            counts[kind] = n
    overdue: list[int] = []
    for urgency in Urgency:
        overdue += db.session.scalars(
            select(Consult.id).where(
                Consult.status == ConsultStatus.REQUESTED, Consult.overdue_at.is_(None),
                Consult.urgency == urgency, Consult.submitted_at <= now - target(urgency))
            .order_by(Consult.submitted_at).limit(limit))
    db.session.rollback()
    n = _each(overdue, lambda i: _overdue(i, now))
    if n:
        counts["request.overdue"] = n
    return counts


def _remind(appointment_id: int, kind: str, column: InstrumentedAttribute, now: datetime) -> bool:
    if not _claim(column, appointment_id, now, Appointment, Appointment.cancelled_at.is_(None)):
        return False
    appt = db.session.get(Appointment, appointment_id)
    if appt is None or appt.cancelled_at is not None:
        return False
    before = dict((k, b) for k, b, _ in REMINDERS)[kind]
    if appt.created_at > appt.starts_at - before:
        return False  # booked later than this reminder's time: the booking notice said it already
    if kind == "reminder.day" and appt.starts_at - now <= REMINDERS[1][1]:
        return False  # the worker was down until the 15-minute reminder: send that one only
    consult = db.session.get(Consult, appt.consult_id)
    notify(parties(consult), kind, {"starts_at": appt.starts_at.isoformat()}, consult=consult,
           urgent=kind == "reminder.soon")
    return True


def _overdue(consult_id: int, now: datetime) -> bool:
    consult = db.session.get(Consult, consult_id)
    if consult is None or consult.status != ConsultStatus.REQUESTED:
        return False
    if not _claim(Consult.overdue_at, consult_id, now, Consult, Consult.status == ConsultStatus.REQUESTED):
        return False
    minutes = target(consult.urgency).total_seconds() / 60
    count = widen_offers(consult)
    with speaking("en"):  # stored as written before: the texts are rendered from the count
        widened = (f"offered to {count} more specialist{'s' if count != 1 else ''}" if count
                   else "all eligible specialists were already offered it")
        target_text = describe(minutes)
    notify([*coordinators(), consult.requester], "request.overdue",
           {"urgency": consult.urgency.value, "specialty": consult.specialty,
            "target": target_text, "target_minutes": round(minutes), "widened": widened,
            "widened_count": count},
           consult=consult, urgent=consult.urgency == Urgency.EMERGENCY)
    return True


def widen_offers(consult: Consult) -> int:
    """Offer an overdue request to eligible specialists not yet offered it; how many were.

    Today every eligible specialist is offered a request when it is sent (consults/services.py
    `_send`), so there is usually nobody left: that is said and nothing is changed.
    """
    from ..consults.matching import eligible_specialists
    from ..models import ConsultOffer

    offered = {o.specialist_id for o in consult.offers}
    fresh = [c for c in eligible_specialists(consult) if c.specialist.id not in offered]
    if not fresh:
        return 0
    rank = max((o.rank for o in consult.offers), default=0)
    for cand in fresh:
        rank += 1
        db.session.add(ConsultOffer(consult_id=consult.id, specialist_id=cand.specialist.id,
                                    rank=rank, is_partner=cand.is_partner))
    notify([c.specialist for c in fresh], "consult.offered",
           {"urgency": consult.urgency.value, "specialty": consult.specialty}, consult=consult,
           urgent=consult.urgency == Urgency.EMERGENCY)
    return len(fresh)
