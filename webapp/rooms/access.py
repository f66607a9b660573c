"""Entering a consult's room: who may, when it opens, and the SQL guard of the hot paths."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, exists, or_, select

from ..audit.services import record_now
from ..consults import policy
from ..consults.policy import Action
from ..consults.services import consult_for
from ..errors import Forbidden, NotFound
from ..extensions import db
from ..i18n import translate
from ..models import AccountStatus, Consult, ConsultStatus, ParticipantRole, User, UserSession
from ..models.types import utcnow
from ..notifications import services as notifications
from ..timefmt import format_local

CLOSED = (ConsultStatus.COMPLETED, ConsultStatus.CANCELLED)
OPEN_ROOM = (ConsultStatus.ACCEPTED, ConsultStatus.SCHEDULED, ConsultStatus.COMPLETED, ConsultStatus.CANCELLED)
WRITABLE = tuple(s for s in OPEN_ROOM if s not in CLOSED)  # the room is open and its chat not read-only


def can_enter(user: User, consult: Consult) -> bool:
    """The consult's participants, and coordinators (who are audited), may open its room (policy)."""
    return policy.allows(user, consult, Action.ENTER_ROOM)


class RoomNotOpen(Forbidden):
    """The booked consult's room opens later; the message says when, in the viewer's zone.

    The message's %(time)s is the opening time written when the message is shown (format_local,
    in the viewer's zone and the request's language), not when the refusal is raised.
    """

    code = "room_not_open"

    def __init__(self, message: str, opens_at: datetime, timezone: str | None = None, **params: Any) -> None:
        super().__init__(message, **{"time": format_local(opens_at, timezone), **params})
        self.opens_at = opens_at
        self.timezone = timezone

    @property
    def message(self) -> str:
        """The message in the current request's language, the opening time written for the viewer."""
        return translate(self.template, {**self.params, "time": format_local(self.opens_at, self.timezone)})


def opens_at(consult: Consult) -> datetime | None:
    """When a booked consult's room opens (None: no booked time, the room is open)."""
    if consult.status != ConsultStatus.SCHEDULED or consult.appointment is None:
        return None
    return consult.appointment.starts_at - timedelta(minutes=current_app.config["ROOM_OPENS_MINUTES_BEFORE"])


def check_open(user: User, consult: Consult, *, now: datetime | None = None) -> None:
    """Refuse the room (chat and call) before its opening time; a written answer is not affected."""
    opening = opens_at(consult)
    if opening is not None and (now or utcnow()) < opening:
        raise RoomNotOpen("The consultation room opens at %(time)s.", opening, user.timezone)


def enter_room(user: User, ref: Any, *, audit: bool = True,
               present: Callable[[int], Iterable[int]] | None = None) -> Consult:
    """The consult whose room the user may open; a refusal is audited and looks like 404.

    present(consult_id): who is in the room; near the booked time the parties away from it are
    told that this user is waiting, in the transaction that audits the entry.
    """
    consult = consult_for(user, ref, can_enter, "room.access_denied")
    check_open(user, consult)
    if audit:
        if present is not None:
            notifications.entered_room(user, consult, present(consult.id))
        record_now("room.entered", actor=user, consult=consult)
    return consult


def consult_by_ref(ref: str) -> Consult:
    """The consult with this reference (for a page already checked by enter_room)."""
    consult = db.session.scalar(select(Consult).where(Consult.ref == ref))
    if consult is None:
        raise NotFound("No such consult.")
    return consult


def member_consult(user: User, ref: Any) -> Consult:
    """Re-check membership for one event (no audit entry unless refused)."""
    return enter_room(user, ref, audit=False)


def party_guard(cid: Any, uid: Any, statuses: Any, action: Action) -> tuple[Any, ...]:
    """SQL conditions proving, without loading anything, that user uid on the session whose key hash
    is bound as :session_hash (open, not idle since :cutoff) is an approved active participant of consult
    cid, in a role the policy allows the action, and the consult is in one of the statuses. Shared
    by the send fast path and the resync check. (No bound name is a column's: SQLAlchemy would
    take such a parameter as a SET value of an UPDATE in the same statement.)"""
    stages = {policy.STAGE_OF[s] for s in statuses}
    roles = set.intersection(*(set(policy.roles_for(action, stage)) for stage in stages))
    return (
        # OR of equalities rather than IN: an IN list is re-expanded on every execution
        exists().where(Consult.id == cid, or_(*(Consult.status == s for s in statuses))),
        # an active participation row (consults.policy): a removed participant fails at once
        policy.is_participant_sql(cid, uid, None if roles == set(ParticipantRole) else roles),
        exists().where(User.id == uid, User.status == AccountStatus.APPROVED),
        # the sender's server-side session is open and not idle (auth.sessions)
        exists().where(UserSession.key_hash == bindparam("session_hash", type_=UserSession.key_hash.type),
                       UserSession.user_id == uid, UserSession.ended_at.is_(None),
                       UserSession.last_seen_at >= bindparam("cutoff", type_=UserSession.last_seen_at.type)),
    )


