"""Matching a consult request to eligible specialists: partner hospital first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from ..extensions import db
from ..models import (
    AccountStatus,
    AvailabilityWindow,
    Consult,
    ConsultStatus,
    Partnership,
    Role,
    User,
)
from ..scheduling.first_available import FreeSlot, first_available

ACTIVE = (ConsultStatus.ACCEPTED, ConsultStatus.SCHEDULED)


@dataclass(frozen=True)
class Candidate:
    """An eligible specialist with the reasons for their place in the ranking."""

    specialist: User
    is_partner: bool
    has_availability: bool
    active_load: int


def partner_facility_ids(facility_id: int | None) -> set[int]:
    """Facilities paired with this one (either direction of the partnership)."""
    if facility_id is None:
        return set()
    rows = db.session.execute(
        select(Partnership.facility_id, Partnership.partner_id).where(
            (Partnership.facility_id == facility_id) | (Partnership.partner_id == facility_id)
        )
    ).all()
    return {a if b == facility_id else b for a, b in rows}


def eligible_specialists(consult: Consult) -> list[Candidate]:
    """Approved specialists of the requested specialty, best first.

    Order: the requester's partner hospital first, then specialists who publish
    availability, then the lightest current load, then name.
    """
    if not consult.specialty:
        return []
    specialists = list(db.session.scalars(
        select(User).where(
            User.role == Role.SPECIALIST,
            User.status == AccountStatus.APPROVED,
            User.specialty == consult.specialty,
            User.id.not_in([p.user_id for p in consult.participants if p.removed_at is None]),
        )
    ))
    if not specialists:
        return []
    ids = [s.id for s in specialists]
    loads = dict(db.session.execute(
        select(Consult.specialist_id, func.count())
        .where(Consult.specialist_id.in_(ids), Consult.status.in_(ACTIVE))
        .group_by(Consult.specialist_id)
    ).all())
    with_windows = set(db.session.scalars(
        select(AvailabilityWindow.specialist_id).where(AvailabilityWindow.specialist_id.in_(ids))
    ))
    partners = partner_facility_ids(consult.requester.facility_id)
    candidates = [
        Candidate(s, s.facility_id in partners, s.id in with_windows, loads.get(s.id, 0))
        for s in specialists
    ]
    candidates.sort(key=lambda c: (not c.is_partner, not c.has_availability, c.active_load,
                                   c.specialist.full_name))
    return candidates


def first_available_for(consult: Consult, *, now: datetime | None = None, prefer_partner: bool = True,
                        limit: int = 3) -> list[FreeSlot]:
    """The earliest free slots for the consult's specialty across every eligible specialist (see
    scheduling.first_available): the requester's partner hospitals first unless prefer_partner is off."""
    if not consult.specialty:
        return []
    return first_available(consult.specialty, facility_id=consult.requester.facility_id,
                           exclude_id=consult.requester_id, now=now, prefer_partner=prefer_partner, limit=limit)
