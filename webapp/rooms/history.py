"""A room's history: pages of messages, the backlog given on joining, and the resync check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import Executable, bindparam, select

from .. import hotdb
from ..auth import sessions
from ..consults.policy import Action
from ..errors import ValidationFailed
from ..extensions import db
from ..models import Consult, Message, RoomCounter, User
from ..models.types import utcnow
from .access import OPEN_ROOM, party_guard
from .send import Sender
from .state import room_state
from .throttle import TooManyMessages

SEQ_LIMIT = 2**31  # sequence numbers are 32-bit integers in the database


@dataclass(frozen=True)
class Page:
    """A page of a consult's chat, oldest first, and whether more lies beyond it.

    more: for a page read forwards (after a sequence number), newer messages exist after it;
    for a page read backwards (the latest page, or the page before a sequence number), older
    messages exist before it.
    """

    messages: list[Message]
    more: bool


def _seq_arg(value: Any, name: str, *, default: int | None = None) -> int:
    """A sequence number from a client: a non-negative int below 2**31, else ValidationFailed."""
    if value is None and default is not None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < SEQ_LIMIT:
        raise ValidationFailed("%(name)s must be a whole number from 0 to %(max)s.", name=name, max=SEQ_LIMIT - 1)
    return value


def _page_limit(limit: int | None) -> int:
    """The page size: the caller's, else CHAT_PAGE_SIZE; never more than CHAT_PAGE_SIZE."""
    size = current_app.config["CHAT_PAGE_SIZE"]
    return size if limit is None else max(1, min(limit, size))


def _page(consult: Consult, *conditions: Any, newest_first: bool, limit: int) -> Page:
    """One bounded, indexed read of (consult_id, seq): limit + 1 rows tell whether more exist."""
    order = Message.seq.desc() if newest_first else Message.seq
    rows = list(db.session.scalars(
        select(Message).where(Message.consult_id == consult.id, *conditions)
        .order_by(order).limit(limit + 1)
    ))
    more = len(rows) > limit
    rows = rows[:limit]
    if newest_first:
        rows.reverse()
    return Page(rows, more)


def messages_page_after(consult: Consult, after_seq: Any, limit: int | None = None) -> Page:
    """The page of messages right after after_seq, oldest first; more: newer ones follow it."""
    after = _seq_arg(after_seq, "after_seq", default=0)
    return _page(consult, Message.seq > after, newest_first=False, limit=_page_limit(limit))


def messages_after(consult: Consult, after_seq: Any, limit: int | None = None) -> list[Message]:
    """Messages with a sequence number above after_seq, in order, at most one page (backfill)."""
    return messages_page_after(consult, after_seq, limit).messages


def messages_before(consult: Consult, before_seq: Any, limit: int | None = None) -> Page:
    """The page of messages right before before_seq, oldest first; more: older ones exist."""
    before = _seq_arg(before_seq, "before_seq")
    return _page(consult, Message.seq < before, newest_first=True, limit=_page_limit(limit))


def latest_messages(consult: Consult, limit: int | None = None) -> Page:
    """The most recent page of the consult's chat, oldest first; more: older ones exist."""
    return _page(consult, newest_first=True, limit=_page_limit(limit))


def last_seq(consult: Consult) -> int:
    """The sequence number of the consult's latest message (0 when none was sent)."""
    return db.session.scalar(select(RoomCounter.last_seq).where(RoomCounter.consult_id == consult.id)) or 0


HEAD_MIN_GAP = 0.5  # seconds between two resync checks of one connection


def _head_statement(dialect: str) -> Executable:
    """The room counter's value, guarded like the send fast path (built once per dialect and app)."""
    return room_state().statement("head", dialect, _build_head)


def _build_head(dialect: str) -> Executable:
    cid, uid = bindparam("cid", type_=RoomCounter.consult_id.type), bindparam("uid", type_=User.id.type)
    return select(RoomCounter.last_seq).where(
        RoomCounter.consult_id == cid, *party_guard(cid, uid, OPEN_ROOM, Action.SEND_RECEIPT))


def head(sender: Sender | None, resolve: Callable[[], tuple[User, Consult]], connection: str) -> int:
    """The resync check: the room's latest seq read from the database, not the message queue.

    Cheap, as every page asks every RESYNC_SECONDS: no audit entry, and for a party on a joined
    connection one indexed statement that also proves the session and the membership (as the send
    fast path does). Anyone else (a coordinator, a room without messages yet, a refusal) goes the
    ordinary way through resolve(). Refused when one connection asks more than twice a second.
    """
    if not room_state().head_gate.allow(connection, HEAD_MIN_GAP):
        raise TooManyMessages("Checking for new messages too often; wait a moment.")
    if sender is not None:
        params = {"cid": sender.consult_id, "uid": sender.user_id,
                  "session_hash": sessions.hash_key(sender.session_key), "cutoff": sessions.idle_cutoff(utcnow())}
        statement = _head_statement(db.engine.dialect.name)
        seq = hotdb.read(lambda conn: conn.execute(statement, params).scalar())
        if seq is not None:
            return seq
    return last_seq(resolve()[1])


@dataclass(frozen=True)
class Backlog:
    """What a joining client is given: one page, and where the room's history goes on from it.

    has_more: older messages exist before the first one given (page back with messages_before).
    more: newer messages exist after the last one given (page forward with messages_page_after).
    last_seq: the room's latest sequence number, read after the page (a client is caught up at it).
    """

    messages: list[Message]
    has_more: bool
    more: bool
    last_seq: int


def join_backlog(consult: Consult, after_seq: Any) -> Backlog:
    """The latest page for a client that has shown nothing (after_seq 0 or absent), else the page after after_seq."""
    after = _seq_arg(after_seq, "after_seq", default=0)
    if after == 0:
        page = latest_messages(consult)
        last = last_seq(consult)
        top = page.messages[-1].seq if page.messages else 0
        return Backlog(page.messages, page.more, last > top, last)
    page = messages_page_after(consult, after)
    last = last_seq(consult)
    # sequence numbers run 1, 2, 3 … without gaps: older messages exist if any at or below after_seq
    return Backlog(page.messages, min(after, last) >= 1, page.more, last)
