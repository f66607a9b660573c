"""The chat's hot path: validating, numbering and storing a message (fast path and full path)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import Executable, Integer, bindparam, cast, exists, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .. import hotdb, ratelimit
from ..auth import sessions
from ..consults import policy
from ..consults.policy import Action
from ..errors import DomainError, Forbidden, ValidationFailed
from ..extensions import db
from ..i18n import N_
from ..models import Attachment, Consult, Message, ParticipantRole, RoomCounter, User, UserSession
from ..models.types import utcnow
from ..notifications import services as notifications
from ..realtime import Entry
from ..validation import check_payload, clean_int, text_problem
from .access import CLOSED, WRITABLE, party_guard
from .state import room_state
from .throttle import TooManyMessages, check_rate
from .wire import to_wire

log = logging.getLogger(__name__)
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")

MAX_CLIENT_SEQ = 2**31 - 1  # the column is a 32-bit integer on PostgreSQL
REPLAY_MIN_WAIT_MS = 1000  # a message that waited this long in the browser's outbox is a replay
# validation.text_problem's reason -> the whole sentence shown to the sender (one msgid each)
TEXT_PROBLEMS = {
    "contains a NUL character": N_("The message text contains a NUL character."),
    "is not valid Unicode (a lone surrogate)": N_("The message text is not valid Unicode (a lone surrogate)."),
    "contains a control character": N_("The message text contains a control character."),
}
TEXT_UNSTORABLE = N_("The message text cannot be stored.")  # a reason not listed above



class OutOfOrder(DomainError):
    """A newer message of this sender is already stored: storing this one would break their order."""

    status = 409
    code = "out_of_order"

    def __init__(self, last_client_seq: int,
                 message: str = N_("A newer message of yours is already stored; this one would be out of order."),
                 **params: Any) -> None:
        super().__init__(message, **params)
        self.last_client_seq = last_client_seq


@dataclass(frozen=True)
class Posted:
    """A stored message and whether this call created it (False: an idempotent retry)."""

    message: Message
    created: bool



def _next_seq(consult_id: int) -> int:
    stmt = (update(RoomCounter).where(RoomCounter.consult_id == consult_id)
            .values(last_seq=RoomCounter.last_seq + 1).returning(RoomCounter.last_seq)
            .execution_options(synchronize_session=False))  # counters are never loaded as objects
    seq = db.session.execute(stmt).scalar()
    if seq is not None:
        return seq
    try:
        with db.session.begin_nested():
            db.session.execute(insert(RoomCounter).values(consult_id=consult_id, last_seq=1))
        return 1
    except IntegrityError:  # another sender created the counter first
        return db.session.execute(stmt).scalar_one()


def _existing(consult: Consult, sender: User, client_id: str) -> Message | None:
    return db.session.scalar(select(Message).where(
        Message.consult_id == consult.id, Message.sender_id == sender.id, Message.client_id == client_id))


def _last_client_seq(consult_id: int, sender_id: int) -> int | None:
    return db.session.scalar(select(func.max(Message.client_seq)).where(
        Message.consult_id == consult_id, Message.sender_id == sender_id))


def _insert_new(consult_id: int, sender_id: int, client_id: str, body: str,
                attachment_id: int | None, client_seq: int | None = None,
                sender_role: ParticipantRole | None = None) -> tuple[int, int, datetime] | None:
    """Take the next sequence number and insert, in the open transaction; None if client_id is taken.

    Two statements and no SELECT first: the counter UPDATE locks the consult's counter row, so
    sequence numbers are handed out one at a time, and the insert skips (rather than fails on) a
    client id this sender already used. The caller rolls back on None, which also gives the
    sequence number back: numbers stay gapless. With a client_seq, a stored message of this sender
    numbered as high or higher raises OutOfOrder (checked after the counter row is locked).
    """
    seq = _next_seq(consult_id)
    if client_seq is not None:
        last = _last_client_seq(consult_id, sender_id)
        if last is not None and last >= client_seq:
            raise OutOfOrder(last)
    created_at = utcnow()
    dialect_insert = pg_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (dialect_insert(Message.__table__)
            .values(consult_id=consult_id, seq=seq, sender_id=sender_id, client_id=client_id, body=body,
                    attachment_id=attachment_id, created_at=created_at, client_seq=client_seq,
                    sender_role=sender_role)
            .on_conflict_do_nothing(index_elements=["consult_id", "sender_id", "client_id"])
            .returning(Message.__table__.c.id))
    message_id = db.session.execute(stmt).scalar()
    return None if message_id is None else (message_id, seq, created_at)


@contextmanager
def loaded_after_commit() -> Iterator[None]:
    """Keep the session's objects loaded across commits inside this block (a rollback still expires).

    For the chat hot path: the ack and the broadcast are built from the message just written, its
    sender and the consult read a moment before; reloading them after each commit cost three
    SELECTs per message. Use only where the block's result is sent and the session then removed.
    """
    session = db.session()
    previous = session.expire_on_commit
    session.expire_on_commit = False
    try:
        yield
    finally:
        session.expire_on_commit = previous


def _clean_text(client_id: Any, body: Any) -> tuple[str, str]:
    """A valid client id and the message text, stripped (possibly empty); else ValidationFailed."""
    if not isinstance(client_id, str) or not CLIENT_ID_RE.match(client_id):
        raise ValidationFailed("Each message needs a client id of 8–64 letters, digits, '-' or '_'.")
    if body is None:
        body = ""
    if not isinstance(body, str):
        raise ValidationFailed("The message text must be a string.")
    problem = text_problem(body, controls=False)
    if problem:
        raise ValidationFailed(TEXT_PROBLEMS.get(problem, TEXT_UNSTORABLE))
    body = body.strip()
    limit = current_app.config["CHAT_MAX_CHARS"]
    if len(body) > limit:
        raise ValidationFailed("Messages are limited to %(limit)s characters.", limit=limit)
    return client_id, body


def _clean_order(client_seq: Any, waited_ms: Any) -> tuple[int | None, bool]:
    """The sender's client sequence number (None: an older client) and whether this is a replay."""
    if client_seq is not None and (not isinstance(client_seq, int) or isinstance(client_seq, bool)
                                   or not 1 <= client_seq <= MAX_CLIENT_SEQ):
        raise ValidationFailed("client_seq must be a number from 1 to %(max)s.", max=MAX_CLIENT_SEQ)
    if waited_ms is not None and (not isinstance(waited_ms, int) or isinstance(waited_ms, bool) or waited_ms < 0):
        raise ValidationFailed("waited_ms must be a non-negative number.")
    return client_seq, waited_ms is not None and waited_ms >= REPLAY_MIN_WAIT_MS


def post_message(sender: User, consult: Consult, client_id: Any, body: Any,
                 attachment_id: Any = None, *, rate_charged: bool = False,
                 client_seq: Any = None, waited_ms: Any = None,
                 present: Callable[[], Iterable[int]] | None = None) -> Posted:
    """Store a message with the next sequence number; a repeated client_id returns the original.

    rate_charged: this message was already counted against the sender's rate limit.
    client_seq: the sender's browser's number for it; one not above the sender's last stored
    number is refused (OutOfOrder) unless it is a retry. waited_ms: how long it waited in the
    browser's outbox (a replay is charged to the replay allowance first, see check_rate).
    present: who is in the room now; the parties who are not are notified (at most once per
    consult per five minutes) in the message's own transaction.
    """
    client_id, body = _clean_text(client_id, body)
    client_seq, replay = _clean_order(client_seq, waited_ms)
    attachment = None
    if attachment_id is not None:
        attachment = db.session.get(Attachment, clean_int(attachment_id, "attachment_id", lo=1))
        if attachment is None or attachment.consult_id != consult.id:
            raise ValidationFailed("That attachment does not belong to this consult.")
    if not body and attachment is None:
        raise ValidationFailed("The message is empty.")
    if not policy.is_participant(sender, consult):
        raise Forbidden("Only the consult's doctors can write in its chat.")
    if consult.status in CLOSED:  # a retry of a message sent before the close still gets its ack
        return _retried_or(consult, sender, client_id, Forbidden("This consult is closed; its chat is read-only."))
    if not policy.allows(sender, consult, Action.POST):
        raise Forbidden("Only the consult's doctors can write in its chat.")
    try:
        if not rate_charged:
            check_rate(sender.id, replay=replay)
    except TooManyMessages as refused:  # a retry is not a new message: recognise it even when limited
        return _retried_or(consult, sender, client_id, refused)
    consult_id, sender_id = consult.id, sender.id
    role = policy.role_of(sender, consult)  # kept with the message: a trainee's question stays marked
    attachment_id = attachment.id if attachment else None
    if db.session.get_bind().dialect.name == "sqlite":
        # End the read-only transaction so the counter UPDATE below opens a fresh one: SQLite then
        # waits for the writer lock (busy_timeout) instead of failing at once with "database is
        # locked" because another sender committed after this snapshot.
        db.session.commit()
    try:
        stored = _insert_new(consult_id, sender_id, client_id, body, attachment_id, client_seq, role)
        if stored is None:  # the sender's client id is taken: an idempotent retry
            db.session.rollback()  # gives the sequence number back
            return _retried_or(consult, sender, client_id, None)
        if present is not None:  # the message and its notifications exist together or not at all
            notifications.chat_posted(consult, sender, present())
        db.session.commit()
    except OutOfOrder as refused:  # a retry of a stored message is still answered with it
        db.session.rollback()
        return _retried_or(consult, sender, client_id, refused)
    except Exception:
        db.session.rollback()
        raise
    message_id, seq, created_at = stored
    # The ack and the broadcast are built from what was just written (no reload): a transient
    # Message carrying the stored id, sequence number and time.
    message = Message(id=message_id, consult_id=consult_id, seq=seq, sender_id=sender_id, client_id=client_id,
                      client_seq=client_seq, body=body, attachment_id=attachment_id, created_at=created_at,
                      sender_role=role)
    message.sender = sender
    message.attachment = attachment
    return Posted(message, True)


@dataclass(frozen=True)
class Sender:
    """Who sends on a joined connection, as the connection table and the session cookie say.

    Nothing here is trusted: the statement that stores the message checks it against the database.
    """

    user_id: int
    session_key: str
    name: str
    consult_id: int


@dataclass(frozen=True)
class FastPost:
    """The fast path's outcome: the stored message's wire form, or None (use post_message).

    rate_charged says whether this message already counted against the sender's rate limit.
    """

    wire: dict[str, Any] | None
    rate_charged: bool = False
    # the statement ran twice (its first connection died): a message found stored may be this
    # send's own first attempt, so it is announced to the room rather than taken as a duplicate
    retried: bool = False


def _claim_statements(dialect: str, touch: bool = False) -> tuple[Executable, ...]:
    """The guarded statements of the chat fast path, built once per dialect and app (room_state)."""
    if dialect == "postgresql":
        return room_state().statement("claim+touch" if touch else "claim", dialect,
                                      lambda _: (_build_pg_send(touch),))
    return room_state().statement("claim", dialect, _build_sqlite_claim)


def _guard(cid: Any, uid: Any) -> tuple[Any, ...]:
    messages = Message.__table__
    return (
        *party_guard(cid, uid, WRITABLE, Action.POST),
        # the sender's order: no stored message of theirs numbered as high (a NULL cseq passes)
        ~exists().where(messages.c.consult_id == cid, messages.c.sender_id == uid,
                        messages.c.client_seq >= bindparam("cseq", type_=Integer())),
    )


COLUMNS = ["consult_id", "seq", "sender_id", "client_id", "body", "created_at", "client_seq", "sender_role"]


def _values(cid: Any, uid: Any, seq: Any) -> list[Any]:
    messages = Message.__table__
    return [cid, seq, uid, bindparam("client_id", type_=messages.c.client_id.type),
            bindparam("body", type_=messages.c.body.type),
            bindparam("sent_at", type_=messages.c.created_at.type),
            cast(bindparam("cseq", type_=Integer()), Integer()),  # typed even when NULL
            policy.role_sql(cid, uid)]  # the role it is written in (a trainee's question is marked)


def _build_pg_send(touch: bool) -> Executable:
    """One statement that is its own transaction (autocommit, webapp/hotdb.py), gap-free.

    current: the counter row, locked, only if the guard proves the send; stored: the message
    numbered last_seq + 1, skipped if the sender's client id is taken (a retry); bumped: the
    counter moved to the stored number, only if a message was stored, so a refused or retried
    send leaves no gap; touch (about once a minute): the session's activity, only with a message.
    """
    counters, messages, user_sessions = RoomCounter.__table__, Message.__table__, UserSession.__table__
    cid, uid = bindparam("cid", type_=counters.c.consult_id.type), bindparam("uid", type_=messages.c.sender_id.type)
    current = (select(counters.c.consult_id, counters.c.last_seq)
               .where(counters.c.consult_id == cid, *_guard(cid, uid)).with_for_update().cte("current"))
    stored = (pg_insert(messages)
              .from_select(COLUMNS, select(*_values(cid, uid, current.c.last_seq + 1)).select_from(current))
              .on_conflict_do_nothing(index_elements=["consult_id", "sender_id", "client_id"])
              .returning(messages.c.id, messages.c.consult_id, messages.c.seq, messages.c.sender_role)
              ).cte("stored")
    bumped = (update(counters).where(counters.c.consult_id == stored.c.consult_id)
              .values(last_seq=stored.c.seq).returning(counters.c.last_seq)).cte("bumped")
    statement = select(stored.c.id, stored.c.seq, stored.c.sender_role).add_cte(bumped)
    if touch:  # guarded like the send: an ended or idle session is not revived
        touched = (update(user_sessions)
                   .where(user_sessions.c.key_hash == bindparam("session_hash", type_=user_sessions.c.key_hash.type),
                          user_sessions.c.ended_at.is_(None),
                          user_sessions.c.last_seen_at >= bindparam("cutoff", type_=user_sessions.c.last_seen_at.type),
                          exists(select(stored.c.id)))
                   .values(last_seen_at=bindparam("seen_at", type_=user_sessions.c.last_seen_at.type))
                   .returning(user_sessions.c.id)).cte("touched")
        statement = statement.add_cte(touched)
    return statement


def _build_sqlite_claim(dialect: str) -> tuple[Executable, ...]:
    """SQLite has no data-modifying CTE: the guarded counter UPDATE, then the INSERT (one transaction)."""
    counters, messages = RoomCounter.__table__, Message.__table__
    cid, uid = bindparam("cid", type_=counters.c.consult_id.type), bindparam("uid", type_=messages.c.sender_id.type)
    claim = (update(counters).where(counters.c.consult_id == cid, *_guard(cid, uid))
             .values(last_seq=counters.c.last_seq + 1).returning(counters.c.last_seq))
    stmt = (sqlite_insert(messages)
            .values(dict(zip(COLUMNS, _values(cid, uid, bindparam("seq", type_=messages.c.seq.type)), strict=True)))
            .on_conflict_do_nothing(index_elements=["consult_id", "sender_id", "client_id"])
            .returning(messages.c.id, messages.c.seq, messages.c.sender_role))
    return claim, stmt


def _sqlite_send(params: dict[str, Any], touch: bool) -> Any:
    """The fast path on SQLite: the guarded counter UPDATE and the INSERT in one short transaction."""
    claim, store = _claim_statements("sqlite")
    with db.engine.connect() as conn, conn.begin() as tx:
        if touch:  # guarded like the claim: an ended or idle session is not revived
            conn.execute(update(UserSession).where(
                UserSession.key_hash == params["session_hash"], UserSession.ended_at.is_(None),
                UserSession.last_seen_at >= params["cutoff"]).values(last_seen_at=params["sent_at"]))
        params["seq"] = conn.execute(claim, params).scalar()
        row = conn.execute(store, params).first() if params["seq"] is not None else None
        if row is None:  # refused, retried or no counter yet: the UPDATE (if any) is undone
            tx.rollback()
        return row


def _activity_due(key_hash: str) -> bool:
    """Whether this session's activity should be written now (about once a minute, per process)."""
    return room_state().activity.due(key_hash, sessions.touch_every())


def post_message_fast(sender: Sender, client_id: Any, body: Any, attachment_id: Any = None, *,
                      client_seq: Any = None, waited_ms: Any = None) -> FastPost:
    """Store a plain text message in one short transaction, or leave the decision to post_message.

    The hot path of the chat. The counter UPDATE that hands out the sequence number carries the
    whole authorisation in its WHERE clause (the server-side session is open, not idle and belongs
    to this approved user, who is a party of this consult, which is still open), so no user or
    consult is loaded. Sending is activity: about once a minute the same transaction also records
    it on the session (one more statement then, none otherwise). Anything else (an attachment,
    a malformed payload, a refusal, a retried client id, a consult without a counter yet, a sender
    over the rate limit, a client_seq out of the sender's order) gives no message, after a
    rollback, and post_message gives the precise answer, audits a refusal or returns the original.
    """
    undecided = FastPost(None)
    if attachment_id is not None:
        return undecided
    try:
        client_id, body = _clean_text(client_id, body)
        client_seq, replay = _clean_order(client_seq, waited_ms)
    except ValidationFailed:
        return undecided
    if not body:
        return undecided
    try:
        check_rate(sender.user_id, replay=replay)
    except TooManyMessages:
        return undecided  # post_message refuses it, or recognises a retry
    created_at = utcnow()
    key_hash = sessions.hash_key(sender.session_key)
    # no parameter is named like a column (see access.party_guard)
    params = {"cid": sender.consult_id, "uid": sender.user_id, "session_hash": key_hash,
              "cutoff": sessions.idle_cutoff(created_at),
              "client_id": client_id, "body": body, "sent_at": created_at, "cseq": client_seq}
    touch = _activity_due(key_hash)
    engine = hotdb.hot_engine()
    if engine is not None:  # PostgreSQL: one statement, its own transaction, one round trip
        params["seen_at"] = created_at
        statement = _claim_statements("postgresql", touch)[0]
        try:
            row, again = hotdb.run(engine, lambda conn: conn.execute(statement, params).first())
        except SQLAlchemyError as exc:  # the database failed (or the pool is exhausted): the full path answers
            log.warning("the chat fast path could not store a message; the full path takes it", exc_info=True)
            return FastPost(None, rate_charged=True, retried=getattr(exc, "hot_retried", False))
        if row is None:  # refused or retried: nothing stored, no number taken
            return FastPost(None, rate_charged=True, retried=again)
    else:
        try:
            row = _sqlite_send(params, touch)
        except SQLAlchemyError:  # "database is locked" and the like: the full path answers
            log.warning("the chat fast path could not store a message; the full path takes it", exc_info=True)
            return FastPost(None, rate_charged=True)
        if row is None:
            return FastPost(None, rate_charged=True)
    message_id, seq, role = row[0], row[1], row[2]
    return FastPost({"id": message_id, "seq": seq, "client_id": client_id, "sender_id": sender.user_id,
                     "sender_name": sender.name, "sender_role": role.value if role is not None else None,
                     "body": body, "created_at": created_at.isoformat()}, rate_charged=True)


class LeanSendFailed(RuntimeError):
    """The lean send failed after counting the event: answered like any failed handler (server_error)."""


def send_lean(entry: Entry | None, data: Any, sid: str, namespace: str,
              present: Callable[[int], Iterable[int]]) -> tuple[Sender | None, FastPost | None]:
    """The lean send path's part in an app context: (sender, fast path outcome), or (None, None).

    (None, None) before anything is counted: not a plain text message on a connection joined to
    this room, or a payload the event handler would refuse; the ordinary handler then answers it.
    Otherwise the event is counted against the connection's and the user's limits (a refusal
    raises, as in realtime.handler) and the fast path runs once; its outcome is the caller's to
    relay or to hand to the full path. (sender, None): counted but not tried (the message may owe
    someone a notification); the full path takes it without counting again. A failure after the
    count (not a database error, which the fast path hands over itself) raises LeanSendFailed.
    """
    if (entry is None or not entry.token or not isinstance(data, dict) or data.get("ref") != entry.ref
            or data.get("attachment_id") is not None):
        return None, None
    try:
        check_payload(data)
    except ValidationFailed:
        return None, None
    if len(json.dumps(data, default=str)) > current_app.config["SOCKET_MAX_PAYLOAD_BYTES"]:
        return None, None
    # counted before any I/O, as realtime.handler counts every event: a flood is refused cheaply
    ratelimit.check_event(namespace, "send", sid=sid)
    ratelimit.check_event(namespace, "send", user=ratelimit.hashed(entry.token))
    sender = Sender(entry.user_id, entry.token, entry.name, entry.consult_id)
    try:
        if notifications.chat_notices().may_be_due(entry.consult_id, entry.user_id, present(entry.consult_id)):
            return sender, None  # counted, not tried: the full path writes it with its notification
        return sender, post_message_fast(sender, data.get("client_id"), data.get("body"), None,
                                         client_seq=data.get("client_seq"), waited_ms=data.get("waited_ms"))
    except Exception as exc:  # counted already: answered as a failed handler is (the client retries)
        raise LeanSendFailed() from exc


@dataclass(frozen=True)
class Sent:
    """A stored chat message: its wire form, its consult, and whether this send created it."""

    wire: dict[str, Any]
    consult_id: int
    created: bool


def send_message(sender: Sender | None, resolve: Callable[[], tuple[User, Consult]], client_id: Any,
                 body: Any, attachment_id: Any = None, *, client_seq: Any = None, waited_ms: Any = None,
                 present: Callable[[int], Iterable[int]] | None = None, tried: FastPost | None = None) -> Sent:
    """Store a chat message, by the fast path when it can; created is False for an idempotent retry.

    A sender known from a joined connection takes the fast path; anything it cannot decide goes
    to post_message with the user and consult that resolve() loads and checks (it raises the
    precise refusal), counting the message once against the rate limit either way. client_seq and
    waited_ms keep the sender's order and tell a replay from a new message (see post_message).
    present(consult_id): the user ids in the room; a message that may owe a party away from the
    room a notification takes post_message, which writes it in the message's transaction.
    tried: the fast path already ran for this send (the lean path, rooms/events.py) and left it
    undecided; it is not run again, and its rate_charged and retried carry over.
    """
    charged = retried = False
    if tried is not None:
        charged, retried = tried.rate_charged, tried.retried
    elif sender is not None and not (present is not None and notifications.chat_notices().may_be_due(
            sender.consult_id, sender.user_id, present(sender.consult_id))):
        fast = post_message_fast(sender, client_id, body, attachment_id, client_seq=client_seq, waited_ms=waited_ms)
        if fast.wire is not None:
            return Sent(fast.wire, sender.consult_id, True)
        charged, retried = fast.rate_charged, fast.retried
    user, consult = resolve()
    in_room = (lambda: present(consult.id)) if present is not None else None
    with loaded_after_commit():  # the wire form below is built from what was just written
        posted = post_message(user, consult, client_id, body, attachment_id, rate_charged=charged,
                              client_seq=client_seq, waited_ms=waited_ms, present=in_room)
    # found stored after a retried statement: perhaps this send's own first attempt, never announced
    return Sent(to_wire(posted.message), consult.id, posted.created or retried)



def _retried_or(consult: Consult, sender: User, client_id: str, refusal: DomainError | None) -> Posted:
    """The stored message with this client id (an idempotent retry), or the refusal."""
    existing = _existing(consult, sender, client_id)
    if existing is not None:
        return Posted(existing, False)
    if refusal is None:  # the insert found the id taken, yet no row: cannot happen, say so loudly
        raise RuntimeError(f"client id {client_id!r} conflicted but no message has it")
    raise refusal


