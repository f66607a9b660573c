"""What each role's home page lists: what needs the viewer's own action first, marked (read-only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..admin.services import Participation, participation
from ..auth import services as accounts
from ..consults import services as consults
from ..i18n import N_
from ..models import Consult, ConsultStatus, Urgency, User, utcnow

SOON = timedelta(hours=24)  # a booked call this close is on the "needs your action" list
URGENCY_ORDER = {Urgency.EMERGENCY: 0, Urgency.URGENT: 1, Urgency.ROUTINE: 2}


@dataclass
class Row:
    """One consult on a dashboard: what the viewer must do about it (or None) and when it last changed."""

    consult: Consult
    action: str | None = None  # a msgid (N_), translated where it is shown
    priority: int = 99  # among the rows that need action: lower first
    endpoint: str = "consults.view"  # where the case's title leads

    @property
    def updated(self) -> datetime:
        """The consult's last change: its own row, its recommendation (draft, signature, acknowledgement)."""
        c = self.consult
        times = [c.updated_at, c.submitted_at, c.accepted_at, c.completed_at, c.cancelled_at]
        if c.recommendation is not None:
            times += [c.recommendation.updated_at, c.recommendation.signed_at, c.recommendation.acknowledged_at]
        return max(t for t in times if t is not None)

    @property
    def appointment_at(self) -> datetime | None:
        c = self.consult
        return c.appointment.starts_at if c.appointment is not None and c.status == ConsultStatus.SCHEDULED else None


def _ordered(rows: list[Row]) -> list[Row]:
    """Rows needing action first (by priority, urgency, longest waiting), then the rest, latest change first."""
    todo = sorted((r for r in rows if r.action),
                  key=lambda r: (r.priority, URGENCY_ORDER[r.consult.urgency], r.updated))
    rest = sorted((r for r in rows if not r.action), key=lambda r: r.updated, reverse=True)
    return todo + rest


def _call_soon(c: Consult, now: datetime) -> bool:
    a = c.appointment
    return c.status == ConsultStatus.SCHEDULED and a is not None and now < a.ends_at and a.starts_at - now <= SOON


def rural_rows(requester: User, now: datetime | None = None) -> list[Row]:
    """The rural doctor's consults: answers to acknowledge, calls soon and drafts first."""
    now = now or utcnow()
    rows = []
    for c in consults.requests_of(requester):
        rec = c.recommendation
        if c.status == ConsultStatus.COMPLETED and rec is not None and rec.is_signed and rec.acknowledged_at is None:
            rows.append(Row(c, N_("Read and acknowledge the answer"), 0))
        elif _call_soon(c, now):
            rows.append(Row(c, N_("Video call soon"), 1))
        elif c.status == ConsultStatus.DRAFT:
            rows.append(Row(c, N_("Finish and send the request"), 2))
        else:
            rows.append(Row(c))
    return _ordered(rows)


@dataclass
class SpecialistHome:
    """The specialist's lists: open offers, taken consults (what needs them first), answered ones."""

    offers: list[Row]
    active: list[Row]
    answered: list[Row]

    @property
    def todo(self) -> int:
        return sum(1 for r in self.offers + self.active if r.action)


def specialist_home(specialist: User, now: datetime | None = None) -> SpecialistHome:
    """Open offers first; then calls soon and answers to sign, then calls booked further ahead; then answered."""
    now = now or utcnow()
    offers = [Row(c, N_("Accept or decline"), 0, "consults.accept") for c in consults.offers_for(specialist)]
    active = []
    for c in consults.active_for_specialist(specialist):
        a = c.appointment
        if _call_soon(c, now):
            active.append(Row(c, N_("Video call soon") if now < a.starts_at else N_("Video call now"), 1))
        elif c.status == ConsultStatus.ACCEPTED or (a is not None and a.ends_at <= now):
            active.append(Row(c, N_("Write and sign the answer"), 2))
        else:
            active.append(Row(c))
    answered = [Row(c) for c in consults.answered_by(specialist)]
    return SpecialistHome(offers, _ordered(active), answered)


@dataclass
class CoordinatorHome:
    """The coordinator's lists: requests without a specialist and registrations to verify."""

    queue: list[Row]
    pending: list[User]
    participation: Participation  # trainees who learned, second specialists and their opinions


def coordinator_home(coordinator: User) -> CoordinatorHome:
    """Requests every specialist declined first (they wait for the coordinator), then unassigned ones."""
    rows = []
    for c in consults.unassigned_queue():
        if c.status == ConsultStatus.DECLINED:
            rows.append(Row(c, N_("All offers declined: assign a specialist"), 0))
        else:
            rows.append(Row(c, N_("No specialist yet: assign or wait"), 1))
    rows.sort(key=lambda r: (r.priority, URGENCY_ORDER[r.consult.urgency], r.consult.submitted_at or r.updated))
    return CoordinatorHome(rows, accounts.pending_registrations(), participation())
