"""Who takes part in a consult beyond its requester and lead: invitations, answers, removals.

The requester or the lead specialist invites a second specialist or a trainee; the invitee accepts
or declines; the inviter or a coordinator removes anyone but the requester and the lead. Every
decision is consults.policy's; each use case commits once, and a removal then closes the removed
user's open connections everywhere (sessionbus.recheck_consult).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from ..audit.services import record
from ..errors import Conflict, Forbidden, NotFound, ValidationFailed
from ..extensions import db
from ..models import (
    AccountStatus,
    Consult,
    ConsultParticipant,
    ConsultStatus,
    Facility,
    ParticipantRole,
    Role,
    User,
    utcnow,
)
from ..notifications.services import notify
from ..sessionbus import recheck_consult
from . import policy
from .matching import partner_facility_ids
from .policy import Action
from .services import by_ref

INVITABLE = (ParticipantRole.SPECIALIST, ParticipantRole.TRAINEE)


def _consult(ref: str, *, lock: bool = True) -> Consult:
    return by_ref(ref, lock=lock)


def _lead_facility(consult: Consult) -> int | None:
    lead = next((p for p in policy.active_participants(consult) if p.role == ParticipantRole.LEAD_SPECIALIST), None)
    return lead.user.facility_id if lead is not None else None


def _requester_facility(consult: Consult) -> int | None:
    requester = next((p for p in consult.participants if p.role == ParticipantRole.REQUESTER), None)
    return requester.user.facility_id if requester is not None else None


def may_invite_as(consult: Consult, invitee: User, role: ParticipantRole) -> bool:
    """An approved specialist as a second specialist; as a trainee, a doctor of the requester's
    facility or a specialist of the lead's hospital."""
    if invitee.status != AccountStatus.APPROVED or role not in INVITABLE:
        return False
    if role == ParticipantRole.SPECIALIST:
        return invitee.role == Role.SPECIALIST
    if invitee.facility_id is None:
        return False
    if invitee.role == Role.RURAL_DOCTOR:
        return invitee.facility_id == _requester_facility(consult)
    return invitee.role == Role.SPECIALIST and invitee.facility_id == _lead_facility(consult)


def invite(inviter: User, ref: str, invitee_id: int, role: ParticipantRole | str) -> ConsultParticipant:
    """The requester or the lead invites a second specialist or a trainee (pending until accepted)."""
    consult = _consult(ref)
    if not policy.can_view(inviter, consult):
        raise NotFound("No such consult.")
    if not policy.allows(inviter, consult, Action.INVITE):
        raise Forbidden("Only the requesting doctor or the lead specialist invites, while the consult is open.")
    try:
        role = ParticipantRole(role)
    except ValueError:
        raise ValidationFailed("Invite as a specialist or as a trainee.", fields={"role": "invalid"}) from None
    invitee = db.session.get(User, invitee_id) if isinstance(invitee_id, int) else None
    if invitee is None or not may_invite_as(consult, invitee, role):
        raise ValidationFailed("This person cannot be invited in that role.", fields={"user_id": "invalid"})
    if policy.participation(invitee, consult) is not None:
        raise Conflict("This person already takes part in the consult or is invited.")
    row = ConsultParticipant(consult=consult, user=invitee, user_id=invitee.id, role=role, added_by=inviter,
                             added_by_id=inviter.id, added_at=utcnow())
    db.session.add(row)
    record("participant.invited", actor=inviter, consult=consult,
           detail={"user_id": invitee.id, "role": role.value})
    notify([invitee], "participant.invited", {"by": inviter.full_name, "role": role.value}, consult=consult)
    db.session.commit()  # the notification is emitted after this commit
    return row


def respond(invitee: User, ref: str, *, accept: bool) -> ConsultParticipant:
    """The invitee accepts (takes part from now) or declines an invitation."""
    consult = _consult(ref)
    row = policy.participation(invitee, consult)
    if row is None or not row.is_invited:
        raise NotFound("No such invitation.")
    now = utcnow()
    if accept:
        if not policy.allows(invitee, consult, Action.VIEW):  # the consult closed meanwhile
            raise Conflict("This consult is closed; the invitation has lapsed.")
        row.accepted_at = now
    else:
        row.removed_at, row.removed_by_id = now, invitee.id
    record("participant.joined" if accept else "participant.declined", actor=invitee, consult=consult,
           detail={"role": row.role.value})
    notify([row.added_by], "participant.accepted" if accept else "participant.declined",
           {"name": invitee.full_name, "role": row.role.value}, consult=consult, exclude=invitee)
    db.session.commit()
    return row


def remove(actor: User, ref: str, user_id: int) -> ConsultParticipant:
    """The inviter or a coordinator removes an invited participant; it takes effect at once."""
    consult = _consult(ref)
    if not policy.can_view(actor, consult):
        raise NotFound("No such consult.")
    row = policy.participation(user_id, consult) if isinstance(user_id, int) else None
    if row is None:
        raise NotFound("No such participant.")
    if not policy.remove_allowed(actor, consult, row):
        raise Forbidden("Only whoever invited them or a coordinator removes a participant; "
                        "the requesting doctor and the lead specialist stay.")
    row.removed_at, row.removed_by_id = utcnow(), actor.id
    record("participant.removed", actor=actor, consult=consult,
           detail={"user_id": row.user_id, "role": row.role.value})
    notify([row.user], "participant.removed", {"by": actor.full_name, "role": row.role.value},
           consult=consult, exclude=actor)
    consult_id = consult.id
    db.session.commit()
    recheck_consult(consult_id)  # their open connections are closed everywhere
    return row


def history(consult: Consult) -> list[ConsultParticipant]:
    """Every participation of the consult, in the order they were added."""
    return sorted(consult.participants, key=lambda p: (p.added_at, p.id))


@dataclass(frozen=True)
class Candidate:
    """Someone the inviter may invite, in a role, and whether they work at a partner hospital."""

    user: User
    role: ParticipantRole
    is_partner: bool


def candidates(inviter: User, ref: str, *, specialty: str | None = None,
               facility_id: int | None = None) -> tuple[Consult, list[Candidate]]:
    """Whom the requester or the lead may invite: approved specialists (of the specialty and facility
    asked, the partner hospital's first) as second specialists, and as trainees the doctors of the
    requester's facility and the specialists of the lead's hospital. Nobody already taking part."""
    consult = _consult(ref, lock=False)
    if not policy.can_view(inviter, consult):
        raise NotFound("No such consult.")
    if not policy.allows(inviter, consult, Action.INVITE):
        raise Forbidden("Only the requesting doctor or the lead specialist invites, while the consult is open.")
    taken = {p.user_id for p in consult.participants if p.removed_at is None}
    partners = partner_facility_ids(_requester_facility(consult))
    query = select(User).where(User.role == Role.SPECIALIST, User.status == AccountStatus.APPROVED)
    if specialty:
        query = query.where(User.specialty == specialty)
    if facility_id:
        query = query.where(User.facility_id == facility_id)
    found = [Candidate(u, ParticipantRole.SPECIALIST, u.facility_id in partners)
             for u in db.session.scalars(query.order_by(User.full_name, User.id)) if u.id not in taken]
    found.sort(key=lambda c: not c.is_partner)  # stable: the partner hospital's first, then by name
    local = [f for f in (_requester_facility(consult), _lead_facility(consult)) if f is not None]
    if local and not specialty:
        trainees = db.session.scalars(select(User).where(
            User.status == AccountStatus.APPROVED, User.facility_id.in_(local),
            User.role.in_((Role.RURAL_DOCTOR, Role.SPECIALIST))).order_by(User.full_name, User.id))
        found += [Candidate(u, ParticipantRole.TRAINEE, u.facility_id in partners) for u in trainees
                  if u.id not in taken and (not facility_id or u.facility_id == facility_id)
                  and may_invite_as(consult, u, ParticipantRole.TRAINEE)]
    return consult, found


def invitations_for(user: User) -> list[ConsultParticipant]:
    """The user's invitations not yet answered, on consults still open to them, oldest first."""
    rows = db.session.scalars(
        select(ConsultParticipant).join(Consult, Consult.id == ConsultParticipant.consult_id).where(
            ConsultParticipant.user_id == user.id, ConsultParticipant.accepted_at.is_(None),
            ConsultParticipant.removed_at.is_(None),
            Consult.status.in_((ConsultStatus.ACCEPTED, ConsultStatus.SCHEDULED)))
        .order_by(ConsultParticipant.added_at, ConsultParticipant.id))
    return list(rows)


def facilities() -> list[Facility]:
    """The facilities to search specialists in, by name."""
    return list(db.session.scalars(select(Facility).order_by(Facility.name, Facility.id)))
