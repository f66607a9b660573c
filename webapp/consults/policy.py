"""Who may see and do what with a consult: the one place deciding access.

Access is a matrix: a user's *standing* in a consult (their participant role, or a coordinator's
oversight, or a specialist weighing an offer or an invitation) and the consult's *stage* give the
set of actions allowed (``MATRIX``). Nothing else compares a user with a consult's columns: the
other domains ask ``allows(user, consult, action)`` (or use the SQL conditions below for lists and
the chat fast path). docs/architecture.md publishes the matrix as a table.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, exists, or_, select

from ..models import (
    Consult,
    ConsultOffer,
    ConsultParticipant,
    ConsultStatus,
    OfferStatus,
    ParticipantRole,
    Role,
    User,
)


class Standing(enum.StrEnum):
    """What a user is to a consult; the first four are participant roles (ParticipantRole)."""

    REQUESTER = "requester"
    LEAD_SPECIALIST = "lead_specialist"
    SPECIALIST = "specialist"
    TRAINEE = "trainee"
    COORDINATOR = "coordinator"  # oversight, not a participant
    OFFERED = "offered"  # a specialist with an open offer of the request
    INVITED = "invited"  # invited as a participant, not yet accepted
    SPEAKER = "speaker"  # a trainee the lead has let speak in the call (besides being a trainee)


class Stage(enum.StrEnum):
    """Consult statuses grouped by what they allow."""

    DRAFT = "draft"
    OPEN = "open"  # requested, or declined by every specialist offered
    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


STAGE_OF: dict[ConsultStatus, Stage] = {
    ConsultStatus.DRAFT: Stage.DRAFT,
    ConsultStatus.REQUESTED: Stage.OPEN,
    ConsultStatus.DECLINED: Stage.OPEN,
    ConsultStatus.ACCEPTED: Stage.ACCEPTED,
    ConsultStatus.SCHEDULED: Stage.SCHEDULED,
    ConsultStatus.COMPLETED: Stage.COMPLETED,
    ConsultStatus.CANCELLED: Stage.CANCELLED,
}


class Action(enum.StrEnum):
    VIEW = "view"  # read the case, its attachments and answer
    EDIT_CASE = "edit_case"
    SUBMIT = "submit"
    ATTACH = "attach"
    CANCEL = "cancel"
    SEE_MATCHING = "see_matching"  # the ranked specialists the request went to
    ASSIGN = "assign"
    BOOK = "book"
    RESCHEDULE = "reschedule"
    SIGN = "sign"  # write and sign the recommendation, decide referral up
    ACKNOWLEDGE = "acknowledge"
    ADD_OPINION = "add_opinion"  # a second specialist's signed addendum
    INVITE = "invite"
    REMOVE = "remove"  # remove an invited participant (remove_allowed says whom)
    ENTER_ROOM = "enter_room"  # open the room: chat history, presence
    POST = "post"  # write in the chat
    SEND_RECEIPT = "send_receipt"  # "seen by" read receipts
    OPEN_NOTES = "open_notes"  # read the shared notes live
    EDIT_NOTES = "edit_notes"
    JOIN_CALL = "join_call"
    SEND_MEDIA = "send_media"  # camera and microphone in the call
    RAISE_HAND = "raise_hand"  # a receive-only participant asks to speak in the call
    ALLOW_SPEECH = "allow_speech"  # let a trainee who raised a hand speak, or withdraw it


A, S = Action, Stage
_ROOM = {S.ACCEPTED, S.SCHEDULED, S.COMPLETED, S.CANCELLED}  # the room exists (read-only once closed)
_LIVE = {S.ACCEPTED, S.SCHEDULED}  # chat writable, notes editable, call open
_BEFORE_ANSWER = {S.DRAFT, S.OPEN, S.ACCEPTED, S.SCHEDULED}
_EVERY = set(Stage)


def _rules(*pairs: tuple[set[Stage], set[Action]]) -> dict[Stage, frozenset[Action]]:
    table: dict[Stage, set[Action]] = {stage: set() for stage in Stage}
    for stages, actions in pairs:
        for stage in stages:
            table[stage] |= actions
    return {stage: frozenset(actions) for stage, actions in table.items()}


# The matrix: standing -> stage -> the actions allowed. docs/architecture.md shows it as a table.
MATRIX: dict[Standing, dict[Stage, frozenset[Action]]] = {
    Standing.REQUESTER: _rules(
        (_EVERY, {A.VIEW, A.SEE_MATCHING}),
        ({S.DRAFT}, {A.SUBMIT}),
        ({S.DRAFT, S.OPEN}, {A.EDIT_CASE}),
        (_BEFORE_ANSWER, {A.ATTACH, A.CANCEL}),
        ({S.ACCEPTED}, {A.BOOK}),
        ({S.SCHEDULED}, {A.RESCHEDULE}),
        (_LIVE, {A.INVITE, A.REMOVE, A.POST, A.EDIT_NOTES, A.JOIN_CALL, A.SEND_MEDIA}),
        (_ROOM, {A.ENTER_ROOM, A.SEND_RECEIPT, A.OPEN_NOTES}),
        ({S.COMPLETED}, {A.ACKNOWLEDGE}),
    ),
    Standing.LEAD_SPECIALIST: _rules(
        (_ROOM, {A.VIEW, A.ENTER_ROOM, A.SEND_RECEIPT, A.OPEN_NOTES}),
        (_LIVE, {A.ATTACH, A.SIGN, A.INVITE, A.REMOVE, A.POST, A.EDIT_NOTES, A.JOIN_CALL, A.SEND_MEDIA,
                 A.ALLOW_SPEECH}),
        ({S.ACCEPTED}, {A.BOOK}),
        ({S.SCHEDULED}, {A.RESCHEDULE}),
    ),
    Standing.SPECIALIST: _rules(
        (_ROOM, {A.VIEW, A.ENTER_ROOM, A.SEND_RECEIPT, A.OPEN_NOTES}),
        (_LIVE, {A.ATTACH, A.POST, A.EDIT_NOTES, A.JOIN_CALL, A.SEND_MEDIA}),
        (_LIVE | {S.COMPLETED}, {A.ADD_OPINION}),
    ),
    Standing.TRAINEE: _rules(
        (_ROOM, {A.VIEW, A.ENTER_ROOM, A.SEND_RECEIPT, A.OPEN_NOTES}),
        (_LIVE, {A.POST, A.JOIN_CALL, A.RAISE_HAND}),  # receive-only: no SEND_MEDIA, notes read-only
    ),
    Standing.COORDINATOR: _rules(
        (_EVERY, {A.VIEW, A.SEE_MATCHING}),
        (_BEFORE_ANSWER, {A.CANCEL}),
        ({S.OPEN}, {A.ASSIGN}),
        (_LIVE, {A.REMOVE}),
        (_ROOM, {A.ENTER_ROOM, A.OPEN_NOTES}),  # audited oversight; no chat, receipts, notes or call
    ),
    Standing.OFFERED: _rules(({S.OPEN}, {A.VIEW})),
    Standing.INVITED: _rules((_LIVE, {A.VIEW})),
    # The lead's grant (consult_participants.speech_allowed_at) adds this to a trainee's standing:
    # their microphone in the call, until the lead withdraws it
    Standing.SPEAKER: _rules((_LIVE, {A.SEND_MEDIA})),
}

# Participant roles that cannot be removed from a consult (the removable ones are invited).
PERMANENT_ROLES = (ParticipantRole.REQUESTER, ParticipantRole.LEAD_SPECIALIST)
# Who counts as "polite" in a call's perfect negotiation: the one ranked later in this order.
CALL_ORDER = (ParticipantRole.LEAD_SPECIALIST, ParticipantRole.SPECIALIST, ParticipantRole.REQUESTER,
              ParticipantRole.TRAINEE)


# --- who a user is to a consult ------------------------------------------------------------------


def participation(user: User | int, consult: Consult) -> ConsultParticipant | None:
    """The user's current (not removed) participation row, accepted or only invited."""
    uid = user if isinstance(user, int) else user.id
    for p in consult.participants:
        if p.user_id == uid and p.removed_at is None:
            return p
    return None


def role_of(user: User | int, consult: Consult) -> ParticipantRole | None:
    """The user's role as an active (accepted, not removed) participant, else None."""
    p = participation(user, consult)
    return p.role if p is not None and p.is_active else None


def pending_offer(user: User, consult: Consult) -> ConsultOffer | None:
    """The open offer of this consult to this specialist, if any."""
    if user.role != Role.SPECIALIST or STAGE_OF[consult.status] != Stage.OPEN:
        return None
    for offer in consult.offers:
        if offer.specialist_id == user.id and offer.status == OfferStatus.OFFERED:
            return offer
    return None


def standings(user: User, consult: Consult) -> set[Standing]:
    """Everything the user is to the consult (a coordinator who is also a participant has both)."""
    found: set[Standing] = set()
    p = participation(user, consult)
    if p is not None:
        found.add(Standing(p.role.value) if p.is_active else Standing.INVITED)
        if p.is_active and p.role == ParticipantRole.TRAINEE and p.speech_allowed_at is not None:
            found.add(Standing.SPEAKER)
    if user.role == Role.COORDINATOR:
        found.add(Standing.COORDINATOR)
    if pending_offer(user, consult) is not None:
        found.add(Standing.OFFERED)
    return found


def allowed_actions(user: User, consult: Consult) -> frozenset[Action]:
    """Every action the user may take on the consult now."""
    stage = STAGE_OF[consult.status]
    result: frozenset[Action] = frozenset()
    for standing in standings(user, consult):
        result |= MATRIX[standing][stage]
    return result


def allows(user: User, consult: Consult, action: Action) -> bool:
    """Whether the user may take this action on the consult now."""
    return action in allowed_actions(user, consult)


def entitled(user: User, consult: Consult, action: Action) -> bool:
    """Whether the user's standing allows the action at some stage (who, not when: the state
    machine then explains a refusal by the consult's status)."""
    return any(action in rules for standing in standings(user, consult) for rules in MATRIX[standing].values())


def is_participant(user: User, consult: Consult) -> bool:
    """An active participant (any role); coordinators looking in are not."""
    return role_of(user, consult) is not None


def remove_allowed(actor: User, consult: Consult, target: ConsultParticipant) -> bool:
    """The inviter or a coordinator removes an invited participant; requester and lead stay."""
    if target.role in PERMANENT_ROLES or target.removed_at is not None or not allows(actor, consult, A.REMOVE):
        return False
    return actor.role == Role.COORDINATOR or target.added_by_id == actor.id


def name_in(consult: Consult, user_id: int) -> str | None:
    """The full name of whoever took part in the consult under that user id (past or present)."""
    return next((p.user.full_name for p in consult.participants if p.user_id == user_id), None)


def active_participants(consult: Consult) -> list[ConsultParticipant]:
    """The consult's active participants, in the call order (lead first)."""
    return sorted((p for p in consult.participants if p.is_active),
                  key=lambda p: (CALL_ORDER.index(p.role), p.id))


def participant_users(consult: Consult, *, exclude: User | None = None) -> list[User]:
    """The users taking part now (notification recipients), without the one acting."""
    return [p.user for p in active_participants(consult) if exclude is None or p.user_id != exclude.id]


def is_polite(user: User, consult: Consult, other_id: int | None = None) -> bool:
    """Perfect negotiation between two call peers: the peer ranked later in CALL_ORDER is polite.

    Without other_id: polite unless the user is the consult's first-ranked participant.
    """
    ranked = [p.user_id for p in active_participants(consult)]
    mine = ranked.index(user.id) if user.id in ranked else len(ranked)
    if other_id is None:
        return mine != 0
    theirs = ranked.index(other_id) if other_id in ranked else len(ranked)
    return (mine, user.id) > (theirs, other_id)


# --- SQL conditions: the same rules for lists and the chat fast path --------------------------------


def _active(consult_id: Any, user_id: Any, roles: Iterable[ParticipantRole] | None) -> list[Any]:
    p = ConsultParticipant
    conditions = [p.consult_id == consult_id, p.user_id == user_id,
                  p.accepted_at.is_not(None), p.removed_at.is_(None)]
    if roles is not None:  # OR of equalities rather than IN (a bound IN list is re-expanded per run)
        conditions.append(or_(*(p.role == r for r in roles)))
    return conditions


def is_participant_sql(consult_id: Any, user_id: Any, roles: Iterable[ParticipantRole] | None = None,
                       ) -> ColumnElement[bool]:
    """EXISTS an active participation of user_id in consult_id (optionally with one of the roles)."""
    return exists().where(*_active(consult_id, user_id, roles))


def role_sql(consult_id: Any, user_id: Any) -> ColumnElement[Any]:
    """A scalar subquery: user_id's role as an active participant of consult_id (NULL if none)."""
    return select(ConsultParticipant.role).where(*_active(consult_id, user_id, None)).limit(1).scalar_subquery()


def roles_in(consult: Consult) -> dict[int, ParticipantRole]:
    """The active participants' user id -> role (for the room's people list and receipts)."""
    return {p.user_id: p.role for p in active_participants(consult)}


def roles_for(action: Action, stage: Stage) -> tuple[ParticipantRole, ...]:
    """The participant roles allowed the action at that stage (from MATRIX)."""
    return tuple(r for r in ParticipantRole if action in MATRIX[Standing(r.value)][stage])


def consults_of(user: User, roles: Iterable[ParticipantRole] | None = None) -> ColumnElement[bool]:
    """A condition on Consult: the user takes part in it now (optionally with one of the roles)."""
    return is_participant_sql(Consult.id, user.id, roles)


def participant_ids(consult_id: int) -> Any:
    """A select of the user ids taking part in a consult now."""
    p = ConsultParticipant
    return select(p.user_id).where(p.consult_id == consult_id, p.accepted_at.is_not(None), p.removed_at.is_(None))


def participant_pairs(consult_ids: Iterable[int]) -> Any:
    """A select of (consult id, user id) of the users taking part now in any of these consults."""
    p = ConsultParticipant
    return select(p.consult_id, p.user_id).where(p.consult_id.in_(list(consult_ids)), p.accepted_at.is_not(None),
                                                 p.removed_at.is_(None))


# --- the named checks the services and templates use -------------------------------------------------


def can_view(user: User, consult: Consult) -> bool:
    """Participants, coordinators, specialists weighing an open offer or an invitation."""
    return allows(user, consult, A.VIEW)


def can_edit_case(user: User, consult: Consult) -> bool:
    """The requester edits the case until a specialist has taken it."""
    return allows(user, consult, A.EDIT_CASE)


def can_attach(user: User, consult: Consult) -> bool:
    """Participants (not trainees) add files until the consult is answered or cancelled."""
    return allows(user, consult, A.ATTACH)


def can_answer(user: User, consult: Consult) -> bool:
    """Only the lead specialist writes and signs the recommendation."""
    return allows(user, consult, A.SIGN)


def can_cancel(user: User, consult: Consult) -> bool:
    """The requester or a coordinator may cancel before the consult is answered."""
    return allows(user, consult, A.CANCEL)


def can_book(user: User, consult: Consult) -> bool:
    """The requester or the lead books the time once a specialist has accepted."""
    return allows(user, consult, A.BOOK)


def can_reschedule(user: User, consult: Consult) -> bool:
    """The requester or the lead moves a booked consultation to another free slot."""
    return allows(user, consult, A.RESCHEDULE)
