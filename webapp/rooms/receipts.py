"""Read receipts for N readers, and who is who in the room (roles for the people list)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from ..consults import policy
from ..consults.policy import Action
from ..errors import Forbidden
from ..extensions import db
from ..models import Consult, ReadReceipt, Role, User
from ..validation import clean_int
from .history import last_seq

COORDINATOR = "coordinator"  # the people list's role of a coordinator looking in (not a participant)


def mark_read(user: User, consult: Consult, seq: Any) -> int:
    """Record that the user has seen messages up to seq; receipts only move forward.

    Only participants send receipts (a coordinator looking in must not show as "Seen by" the
    doctors), and a receipt never runs ahead of the last message actually sent.
    """
    seq = clean_int(seq, "seq")
    if not policy.allows(user, consult, Action.SEND_RECEIPT):
        raise Forbidden("Only the consult's doctors send read receipts.")
    seq = min(seq, last_seq(consult))
    receipt = db.session.get(ReadReceipt, (consult.id, user.id))
    if receipt is None:
        receipt = ReadReceipt(consult_id=consult.id, user_id=user.id, last_read_seq=0)
        db.session.add(receipt)
    receipt.last_read_seq = max(receipt.last_read_seq, seq)
    db.session.commit()
    return receipt.last_read_seq


def read_receipts(consult: Consult) -> dict[int, int]:
    """The active participants' user id -> last sequence number that user has seen."""
    return dict(db.session.execute(
        select(ReadReceipt.user_id, ReadReceipt.last_read_seq)
        .where(ReadReceipt.consult_id == consult.id, ReadReceipt.user_id.in_(policy.participant_ids(consult.id)))
    ).all())


def readers_of(receipts: dict[int, int], seq: int, *, exclude: int | None = None) -> list[int]:
    """The user ids whose receipt reaches seq (who has seen that message), but not exclude."""
    return sorted(uid for uid, read in receipts.items() if read >= seq and uid != exclude)


def participants(consult: Consult) -> list[dict[str, Any]]:
    """The room's participants for the client: user id, name and role (lead first)."""
    return [{"user_id": p.user_id, "name": p.user.full_name, "role": p.role.value}
            for p in policy.active_participants(consult)]


def with_roles(consult: Consult, people: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The presence list's people, each with its role in this consult (a participant's role, or
    "coordinator" for a coordinator looking in); one query for the users who are not participants."""
    people = list(people)
    roles: dict[int, str] = {uid: role.value for uid, role in policy.roles_in(consult).items()}
    others = [p["user_id"] for p in people if p["user_id"] not in roles]
    if others:
        for uid in db.session.scalars(select(User.id).where(User.id.in_(others), User.role == Role.COORDINATOR)):
            roles[uid] = COORDINATOR
    return [{**p, "role": roles.get(p["user_id"])} for p in people]


def people_in_room(consult_id: int, people: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The presence list with roles; without them if the database fails (a departure is still told,
    room.js keeps the roles it knows)."""
    try:
        consult = db.session.get(Consult, consult_id)
        return with_roles(consult, people) if consult is not None else people
    except SQLAlchemyError:
        db.session.rollback()
        current_app.logger.warning("roles for the room's people unavailable; listing them without")
        return people
