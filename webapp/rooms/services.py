"""Consult-room chat: persisted, sequenced, idempotent messages; read receipts."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app, url_for
from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import Executable, Integer, bindparam, cast, exists, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from ..audit.services import record_now, record_refusal
from ..auth import sessions
from ..consults import policy
from ..consults.policy import Action
from ..errors import DomainError, Forbidden, NotFound, ValidationFailed
from ..extensions import db
from ..i18n import N_, translate
from ..models import (
    AccountStatus,
    Attachment,
    Consult,
    ConsultStatus,
    Message,
    ParticipantRole,
    ReadReceipt,
    RoomCounter,
    User,
    UserSession,
)
from ..models.types import utcnow
from ..notifications import services as notifications
from ..ratelimit import LocalMovingWindow
from ..timefmt import format_local
from ..validation import clean_int, text_problem

CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
CLOSED = (ConsultStatus.COMPLETED, ConsultStatus.CANCELLED)
OPEN_ROOM = (ConsultStatus.ACCEPTED, ConsultStatus.SCHEDULED, ConsultStatus.COMPLETED, ConsultStatus.CANCELLED)
WRITABLE = tuple(s for s in OPEN_ROOM if s not in CLOSED)  # the room is open and its chat not read-only
MAX_CLIENT_SEQ = 2**31 - 1  # the column is a 32-bit integer on PostgreSQL
REPLAY_MIN_WAIT_MS = 1000  # a message that waited this long in the browser's outbox is a replay
# validation.text_problem's reason -> the whole sentence shown to the sender (one msgid each)
TEXT_PROBLEMS = {
    "contains a NUL character": N_("The message text contains a NUL character."),
    "is not valid Unicode (a lone surrogate)": N_("The message text is not valid Unicode (a lone surrogate)."),
    "contains a control character": N_("The message text contains a control character."),
}
TEXT_UNSTORABLE = N_("The message text cannot be stored.")  # a reason not listed above


class TooManyMessages(DomainError):
    status = 429
    code = "rate_limited"


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
    if not isinstance(ref, str) or not ref or len(ref) > 32 or text_problem(ref):
        raise ValidationFailed("A consult reference is required.")
    consult = db.session.scalar(select(Consult).where(Consult.ref == ref))
    if consult is None:
        raise NotFound("No such consult.")
    if not can_enter(user, consult):
        record_refusal("room.access_denied", actor=user, consult=consult)
        raise NotFound("No such consult.")
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


_limiter: dict[str, MovingWindowRateLimiter | LocalMovingWindow] = {}


def _rate_limiter() -> MovingWindowRateLimiter | LocalMovingWindow:
    uri = current_app.config["RATELIMIT_STORAGE_URI"]
    if uri not in _limiter:
        _limiter[uri] = (LocalMovingWindow() if uri.startswith("memory://")
                         else MovingWindowRateLimiter(storage_from_string(uri)))
    return _limiter[uri]


def check_rate(user_id: int, *, replay: bool = False) -> None:
    """Refuse a sender over CHAT_MESSAGES_PER_SECOND (per user, across processes with Redis).

    A replay (a message that waited in the browser's outbox) is first charged to a separate
    allowance of CHAT_REPLAYS_PER_MINUTE, so a reconnect flush of a normal backlog is not refused;
    once that is spent it counts against the per-second limit like a new message.
    """
    limit = RateLimitItemPerSecond(current_app.config["CHAT_MESSAGES_PER_SECOND"])
    try:
        limiter = _rate_limiter()
        if replay and limiter.hit(RateLimitItemPerMinute(current_app.config["CHAT_REPLAYS_PER_MINUTE"]),
                                  "chat-replay", str(user_id)):
            return
        allowed = limiter.hit(limit, "chat", str(user_id))
    except Exception:  # the limiter's storage is down: do not lose clinical messages over it
        current_app.logger.warning("chat rate limiter unavailable; allowing message")
        return
    if not allowed:
        raise TooManyMessages("You are sending messages too fast; wait a moment.")


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
                attachment_id: int | None, client_seq: int | None = None) -> tuple[int, int, datetime] | None:
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
                    attachment_id=attachment_id, created_at=created_at, client_seq=client_seq)
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
    attachment_id = attachment.id if attachment else None
    if db.session.get_bind().dialect.name == "sqlite":
        # End the read-only transaction so the counter UPDATE below opens a fresh one: SQLite then
        # waits for the writer lock (busy_timeout) instead of failing at once with "database is
        # locked" because another sender committed after this snapshot.
        db.session.commit()
    try:
        stored = _insert_new(consult_id, sender_id, client_id, body, attachment_id, client_seq)
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
                      client_seq=client_seq, body=body, attachment_id=attachment_id, created_at=created_at)
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


_claim_cache: dict[str, tuple[Executable, ...]] = {}


def _party_guard(cid: Any, uid: Any, statuses: Any, action: Action) -> tuple[Any, ...]:
    """SQL conditions proving, without loading anything, that user uid on the session whose key hash
    is bound as :key_hash (open, not idle since :cutoff) is an approved active participant of consult
    cid, in a role the policy allows the action, and the consult is in one of the statuses. Shared
    by the send fast path and the resync check."""
    stages = {policy.STAGE_OF[s] for s in statuses}
    roles = set.intersection(*(set(policy.roles_for(action, stage)) for stage in stages))
    return (
        # OR of equalities rather than IN: an IN list is re-expanded on every execution
        exists().where(Consult.id == cid, or_(*(Consult.status == s for s in statuses))),
        # an active participation row (consults.policy): a removed participant fails at once
        policy.is_participant_sql(cid, uid, None if roles == set(ParticipantRole) else roles),
        exists().where(User.id == uid, User.status == AccountStatus.APPROVED),
        # the sender's server-side session is open and not idle (auth.sessions)
        exists().where(UserSession.key_hash == bindparam("key_hash", type_=UserSession.key_hash.type),
                       UserSession.user_id == uid, UserSession.ended_at.is_(None),
                       UserSession.last_seen_at >= bindparam("cutoff", type_=UserSession.last_seen_at.type)),
    )


def _claim_statements(dialect: str) -> tuple[Executable, ...]:
    """The guarded statements of the chat fast path, built once per dialect (compiled once, cached)."""
    if dialect in _claim_cache:
        return _claim_cache[dialect]
    counters, messages = RoomCounter.__table__, Message.__table__
    cid, uid = bindparam("cid", type_=counters.c.consult_id.type), bindparam("uid", type_=messages.c.sender_id.type)
    guard = (
        *_party_guard(cid, uid, WRITABLE, Action.POST),
        # the sender's order: no stored message of theirs numbered as high (a NULL cseq passes)
        ~exists().where(messages.c.consult_id == cid, messages.c.sender_id == uid,
                        messages.c.client_seq >= bindparam("cseq", type_=Integer())),
    )
    claim = (update(counters).where(counters.c.consult_id == cid, *guard)
             .values(last_seq=counters.c.last_seq + 1).returning(counters.c.last_seq))
    columns = ["consult_id", "seq", "sender_id", "client_id", "body", "created_at", "client_seq"]
    values = [cid, None, uid, bindparam("client_id", type_=messages.c.client_id.type),
              bindparam("body", type_=messages.c.body.type),
              bindparam("created_at", type_=messages.c.created_at.type),
              cast(bindparam("cseq", type_=Integer()), Integer())]  # typed even when NULL
    if dialect == "postgresql":  # one statement: the counter UPDATE feeds the INSERT through a CTE
        claimed = claim.cte("claim")
        values[1] = claimed.c.last_seq
        stmt = (pg_insert(messages).from_select(columns, select(*values))
                .on_conflict_do_nothing(index_elements=["consult_id", "sender_id", "client_id"])
                .returning(messages.c.id, messages.c.seq))
        statements: tuple[Executable, ...] = (stmt,)
    else:  # SQLite has no data-modifying CTE: the guarded UPDATE, then the INSERT
        values[1] = bindparam("seq", type_=messages.c.seq.type)
        stmt = (sqlite_insert(messages).values(dict(zip(columns, values, strict=True)))
                .on_conflict_do_nothing(index_elements=["consult_id", "sender_id", "client_id"])
                .returning(messages.c.id, messages.c.seq))
        statements = (claim, stmt)
    _claim_cache[dialect] = statements
    return statements


_touched: dict[str, float] = {}
_touched_lock = threading.Lock()


def _activity_due(key_hash: str) -> bool:
    """Whether this session's activity should be written now (about once a minute, per process)."""
    now = time.monotonic()
    with _touched_lock:
        if now - _touched.get(key_hash, -1e9) < sessions.touch_every():
            return False
        if len(_touched) > 100_000:
            _touched.clear()
        _touched[key_hash] = now
        return True


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
    params = {"cid": sender.consult_id, "uid": sender.user_id, "key_hash": key_hash,
              "cutoff": sessions.idle_cutoff(created_at),
              "client_id": client_id, "body": body, "created_at": created_at, "cseq": client_seq}
    engine = db.engine
    dialect = engine.dialect.name
    statements = _claim_statements(dialect)
    touch = _activity_due(key_hash)
    with engine.connect() as conn, conn.begin() as tx:
        if touch:  # guarded like the claim: an ended or idle session is not revived
            conn.execute(update(UserSession).where(
                UserSession.key_hash == key_hash, UserSession.ended_at.is_(None),
                UserSession.last_seen_at >= params["cutoff"]).values(last_seen_at=created_at))
        if dialect == "postgresql":
            row = conn.execute(statements[0], params).first()
        else:
            claim, store = statements
            params["seq"] = conn.execute(claim, params).scalar()
            row = conn.execute(store, params).first() if params["seq"] is not None else None
        if row is None:  # refused, retried or no counter yet: the UPDATE (if any) is undone
            tx.rollback()
            return FastPost(None, rate_charged=True)
    message_id, seq = row
    return FastPost({"id": message_id, "seq": seq, "client_id": client_id, "sender_id": sender.user_id,
                     "sender_name": sender.name, "body": body, "created_at": created_at.isoformat()},
                    rate_charged=True)


@dataclass(frozen=True)
class Sent:
    """A stored chat message: its wire form, its consult, and whether this send created it."""

    wire: dict[str, Any]
    consult_id: int
    created: bool


def send_message(sender: Sender | None, resolve: Callable[[], tuple[User, Consult]], client_id: Any,
                 body: Any, attachment_id: Any = None, *, client_seq: Any = None, waited_ms: Any = None,
                 present: Callable[[int], Iterable[int]] | None = None) -> Sent:
    """Store a chat message, by the fast path when it can; created is False for an idempotent retry.

    A sender known from a joined connection takes the fast path; anything it cannot decide goes
    to post_message with the user and consult that resolve() loads and checks (it raises the
    precise refusal), counting the message once against the rate limit either way. client_seq and
    waited_ms keep the sender's order and tell a replay from a new message (see post_message).
    present(consult_id): the user ids in the room; a message that may owe a party away from the
    room a notification takes post_message, which writes it in the message's transaction.
    """
    charged = False
    if sender is not None and not (present is not None and notifications.chat_notices().may_be_due(
            sender.consult_id, sender.user_id, present(sender.consult_id))):
        fast = post_message_fast(sender, client_id, body, attachment_id, client_seq=client_seq, waited_ms=waited_ms)
        if fast.wire is not None:
            return Sent(fast.wire, sender.consult_id, True)
        charged = fast.rate_charged
    user, consult = resolve()
    in_room = (lambda: present(consult.id)) if present is not None else None
    with loaded_after_commit():  # the wire form below is built from what was just written
        posted = post_message(user, consult, client_id, body, attachment_id, rate_charged=charged,
                              client_seq=client_seq, waited_ms=waited_ms, present=in_room)
    return Sent(to_wire(posted.message), consult.id, posted.created)


def _retried_or(consult: Consult, sender: User, client_id: str, refusal: DomainError | None) -> Posted:
    """The stored message with this client id (an idempotent retry), or the refusal."""
    existing = _existing(consult, sender, client_id)
    if existing is not None:
        return Posted(existing, False)
    if refusal is None:  # the insert found the id taken, yet no row: cannot happen, say so loudly
        raise RuntimeError(f"client id {client_id!r} conflicted but no message has it")
    raise refusal


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


class IntervalGate:
    """At most one pass per key in any `gap` seconds, in this process (keys forgotten once idle)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def allow(self, key: str, gap: float) -> bool:
        now = time.monotonic()
        with self._lock:
            if len(self._last) > 10_000:  # drop connections that stopped asking (closed ones)
                self._last = {k: t for k, t in self._last.items() if now - t < 60}
            if now - self._last.get(key, -gap) < gap:
                return False
            self._last[key] = now
            return True


_head_gate = IntervalGate()
HEAD_MIN_GAP = 0.5  # seconds between two resync checks of one connection
_head_cache: dict[str, Executable] = {}


def _head_statement(dialect: str) -> Executable:
    """The room counter's value, guarded like the send fast path (built once per dialect)."""
    if dialect not in _head_cache:
        cid, uid = bindparam("cid", type_=RoomCounter.consult_id.type), bindparam("uid", type_=User.id.type)
        _head_cache[dialect] = select(RoomCounter.last_seq).where(
            RoomCounter.consult_id == cid, *_party_guard(cid, uid, OPEN_ROOM, Action.SEND_RECEIPT))
    return _head_cache[dialect]


def head(sender: Sender | None, resolve: Callable[[], tuple[User, Consult]], connection: str) -> int:
    """The resync check: the room's latest seq read from the database, not the message queue.

    Cheap, as every page asks every RESYNC_SECONDS: no audit entry, and for a party on a joined
    connection one indexed statement that also proves the session and the membership (as the send
    fast path does). Anyone else (a coordinator, a room without messages yet, a refusal) goes the
    ordinary way through resolve(). Refused when one connection asks more than twice a second.
    """
    if not _head_gate.allow(connection, HEAD_MIN_GAP):
        raise TooManyMessages("Checking for new messages too often; wait a moment.")
    if sender is not None:
        params = {"cid": sender.consult_id, "uid": sender.user_id, "key_hash": sessions.hash_key(sender.session_key),
                  "cutoff": sessions.idle_cutoff(utcnow())}
        with db.engine.connect() as conn:
            seq = conn.execute(_head_statement(db.engine.dialect.name), params).scalar()
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


def to_wire(message: Message) -> dict[str, Any]:
    """The JSON form of a message sent to clients (text is rendered as text by the client)."""
    data: dict[str, Any] = {
        "id": message.id, "seq": message.seq, "client_id": message.client_id,
        "sender_id": message.sender_id, "sender_name": message.sender.full_name,
        "body": message.body, "created_at": message.created_at.isoformat(),
    }
    if message.attachment is not None:
        a = message.attachment
        consult_ref = db.session.scalar(select(Consult.ref).where(Consult.id == message.consult_id))
        data["attachment"] = {
            "id": a.id, "name": a.original_name, "content_type": a.content_type, "size": a.size_bytes,
            "url": url_for("consults.attachment", ref=consult_ref, attachment_id=a.id),
        }
    return data
