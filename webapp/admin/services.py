"""Coordinator use cases: facilities, partnerships, programme figures."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..audit.services import record
from ..errors import Conflict, Forbidden, NotFound, ValidationFailed
from ..extensions import db
from ..models import (
    AccountStatus,
    Consult,
    ConsultOpinion,
    ConsultParticipant,
    ConsultStatus,
    Facility,
    FacilityLevel,
    ParticipantRole,
    Partnership,
    Recommendation,
    Role,
    User,
)


def _require_coordinator(user: User) -> None:
    if user.role != Role.COORDINATOR:
        raise Forbidden("Only coordinators manage the programme.")


def list_facilities() -> list[Facility]:
    """All facilities, by region then name."""
    return list(db.session.scalars(select(Facility).order_by(Facility.region, Facility.name)))


def save_facility(coordinator: User, name: str, level: FacilityLevel, region: str,
                  facility_id: int | None = None) -> Facility:
    """Create or rename a facility; names are unique."""
    _require_coordinator(coordinator)
    name, region = name.strip(), region.strip()
    if not name or not region:
        raise ValidationFailed("Name and region are required.")
    if facility_id is None:
        facility = Facility(name=name, level=level, region=region)
        db.session.add(facility)
    else:
        facility = db.session.get(Facility, facility_id)
        if facility is None:
            raise NotFound("No such facility.")
        facility.name, facility.level, facility.region = name, level, region
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise Conflict("A facility with this name already exists.", fields={"name": "taken"}) from None
    record("facility.saved", actor=coordinator, target=f"facility:{facility.id}", detail={"name": name})
    db.session.commit()
    return facility


def list_partnerships() -> list[Partnership]:
    """All partnerships."""
    return list(db.session.scalars(select(Partnership).order_by(Partnership.id)))


def add_partnership(coordinator: User, facility_id: int, partner_id: int) -> Partnership:
    """Pair a facility with a partner hospital (routing prefers the partner's specialists)."""
    _require_coordinator(coordinator)
    if facility_id == partner_id:
        raise ValidationFailed("A facility cannot partner with itself.")
    facility, partner = db.session.get(Facility, facility_id), db.session.get(Facility, partner_id)
    if facility is None or partner is None:
        raise ValidationFailed("Choose two existing facilities.")
    existing = db.session.scalar(select(Partnership).where(
        ((Partnership.facility_id == facility_id) & (Partnership.partner_id == partner_id))
        | ((Partnership.facility_id == partner_id) & (Partnership.partner_id == facility_id))
    ))
    if existing is not None:
        raise Conflict("These facilities are already partners.")
    pair = Partnership(facility_id=facility_id, partner_id=partner_id, created_by_id=coordinator.id)
    db.session.add(pair)
    db.session.flush()
    record("partnership.added", actor=coordinator, target=f"partnership:{pair.id}",
           detail={"facility": facility.name, "partner": partner.name})
    db.session.commit()
    return pair


def remove_partnership(coordinator: User, partnership_id: int) -> None:
    """End a partnership."""
    _require_coordinator(coordinator)
    pair = db.session.get(Partnership, partnership_id)
    if pair is None:
        raise NotFound("No such partnership.")
    record("partnership.removed", actor=coordinator, target=f"partnership:{pair.id}",
           detail={"facility": pair.facility.name, "partner": pair.partner.name})
    db.session.delete(pair)
    db.session.commit()


def approved_specialists() -> list[User]:
    """Every approved specialist, by name."""
    return list(db.session.scalars(select(User).where(
        User.role == Role.SPECIALIST, User.status == AccountStatus.APPROVED).order_by(User.full_name)))


def list_users() -> list[User]:
    """Every account, newest first."""
    return list(db.session.scalars(select(User).order_by(User.created_at.desc())))


@dataclass(frozen=True)
class Figures:
    """Programme outcomes for the coordinator."""

    by_status: dict[str, int]
    median_hours_to_accept: float | None
    median_hours_to_answer: float | None
    answered: int
    referred_up: int
    managed_locally: int
    participation: Participation


@dataclass(frozen=True)
class Participation:
    """Beyond the pair: trainees who learned from consults, and second specialists' opinions."""

    trainees: int  # distinct doctors who took part in a consult as a trainee (accepted an invitation)
    trainee_consults: int  # consults with at least one such trainee
    second_specialists: int  # accepted invitations of a second specialist
    opinions: int  # signed second opinions
    opinion_consults: int  # consults with at least one signed second opinion


def participation() -> Participation:
    """How many trainees learned from how many consults, and the second-opinion counts."""
    p, o = ConsultParticipant, ConsultOpinion
    accepted = (p.accepted_at.is_not(None),)
    trainees, trainee_consults = db.session.execute(
        select(func.count(func.distinct(p.user_id)), func.count(func.distinct(p.consult_id)))
        .where(p.role == ParticipantRole.TRAINEE, *accepted)).one()
    second = db.session.scalar(select(func.count(p.id)).where(p.role == ParticipantRole.SPECIALIST, *accepted))
    opinions, opinion_consults = db.session.execute(
        select(func.count(o.id), func.count(func.distinct(o.consult_id)))).one()
    return Participation(trainees=trainees or 0, trainee_consults=trainee_consults or 0,
                         second_specialists=second or 0, opinions=opinions or 0,
                         opinion_consults=opinion_consults or 0)


def figures() -> Figures:
    """Counts by status, response times and referral outcomes."""
    by_status = {s.value: 0 for s in ConsultStatus}
    for status, count in db.session.execute(select(Consult.status, func.count()).group_by(Consult.status)):
        by_status[status.value] = count
    rows = db.session.execute(select(Consult.submitted_at, Consult.accepted_at, Consult.completed_at)
                              .where(Consult.submitted_at.is_not(None))).all()
    to_accept = [(a - s).total_seconds() / 3600 for s, a, _ in rows if a]
    to_answer = [(c - s).total_seconds() / 3600 for s, _, c in rows if c]
    signed = db.session.scalars(
        select(Recommendation.refer_up).where(Recommendation.signed_at.is_not(None))
    ).all()
    return Figures(
        by_status=by_status,
        median_hours_to_accept=round(median(to_accept), 1) if to_accept else None,
        median_hours_to_answer=round(median(to_answer), 1) if to_answer else None,
        answered=len(signed),
        referred_up=sum(1 for r in signed if r),
        managed_locally=sum(1 for r in signed if not r),
        participation=participation(),
    )
