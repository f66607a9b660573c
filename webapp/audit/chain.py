"""The audit log's hash chain: entries are sealed at commit and the stored chain can be verified.

Every audit entry carries ``seq`` (its position, 1, 2, 3 … with no gaps), ``prev_hash`` (the
hash of entry ``seq - 1``, or ``GENESIS`` for the first) and ``hash`` =
SHA-256("prev_hash:seq:content_hash"), where content_hash is SHA-256 over a canonical JSON
serialisation of its time, actor, action, consult, target, address and detail. The single
``audit_chain`` row holds the last ``seq``, its ``hash`` and ``prev_hash`` (the chain head), so
deleting the newest entries is found too.

``record`` (services.py) only queues an entry on the session; ``seal_pending`` runs in the
session's ``before_commit`` hook, the last thing before COMMIT: it flushes the caller's changes
first, then appends. On PostgreSQL one statement per entry moves the head (an UPDATE that locks
its row until COMMIT; the database computes the link hash) and inserts the entry, so the lock is
held for that statement and the COMMIT only. Elsewhere (SQLite) an UPDATE of the head takes the
write lock, Python numbers and hashes the entries, inserts them and moves the head. Concurrent
transactions extend the chain one after the other and can never fork it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, bindparam, event, select, text, update
from sqlalchemy.orm import Session, SessionTransaction, make_transient_to_detached

from ..models import AuditChainHead, AuditEvent
from ..models.types import UTCDateTime

GENESIS = "0" * 64  # prev_hash of the first entry
HEAD_ID = 1  # the one global chain
FORMAT = "huizhen-audit-v1"  # part of every hashed document; a new format gets a new tag
PENDING_KEY = "huizhen.audit_pending"  # session.info: entries queued by record() in this transaction


class AuditChainBroken(RuntimeError):
    """Raised when new entries cannot be chained (the chain head is missing but entries exist)."""


# --- the canonical form ---------------------------------------------------------------------------


def _time(at: datetime) -> str:
    if at.tzinfo is None:  # SQLite drops the zone; audit times are always UTC
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(*, at: datetime, actor_id: int | None, actor_email: str | None, action: str,
              consult_id: int | None, target: str | None, ip: str | None, detail: Any) -> bytes:
    """The bytes hashed for an entry's content: a JSON array in a fixed order, ASCII only."""
    document = [FORMAT, _time(at), actor_id, actor_email, action, consult_id, target, ip,
                detail if detail is not None else {}]
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def link(prev_hash: str, seq: int, content_hash: str) -> str:
    """The chained hash: SHA-256 of "prev_hash:seq:content_hash" (PostgreSQL computes the same)."""
    return hashlib.sha256(f"{prev_hash}:{seq}:{content_hash}".encode("ascii")).hexdigest()


def entry_hash(*, seq: int, prev_hash: str, **content: Any) -> str:
    """The hash an entry with this position, predecessor and content (``canonical``'s keywords) carries."""
    return link(prev_hash, seq, hashlib.sha256(canonical(**content)).hexdigest())


CONTENT = ("at", "actor_id", "actor_email", "action", "consult_id", "target", "ip", "detail")
HASHED = ("seq", *CONTENT, "prev_hash")


def content_hash_of(entry: Any) -> str:
    """SHA-256 (hex) of an entry's canonical content (everything but its place in the chain)."""
    return hashlib.sha256(canonical(**{name: getattr(entry, name) for name in CONTENT})).hexdigest()


def hash_of(entry: Any) -> str:
    """The hash an entry (an AuditEvent or a row with the same attributes) should carry."""
    return link(entry.prev_hash, entry.seq, content_hash_of(entry))


def normalise_detail(detail: dict[str, Any] | None) -> dict[str, Any]:
    """The detail as it will read back from the JSON column (string keys, lists for tuples)."""
    return json.loads(json.dumps(detail or {}))


# --- sealing at commit ------------------------------------------------------------------------------


def queue(session: Session, entry: AuditEvent) -> None:
    """Queue an entry; it is chained and inserted when the session's transaction commits."""
    if not session.in_transaction():
        session.begin()  # so that a rollback or close discards the queue (after_transaction_end)
    session.info.setdefault(PENDING_KEY, []).append(entry)


def _missing_head(session: Session) -> None:
    """Create the head of an empty chain (the migration does; tests empty every table)."""
    if session.scalar(select(AuditEvent.id).limit(1)) is not None:
        raise AuditChainBroken("the audit chain head is missing; run `flask audit verify`")
    values = {"id": HEAD_ID, "seq": 0, "prev_hash": GENESIS, "hash": GENESIS}
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    session.execute(dialect_insert(AuditChainHead).values(**values).on_conflict_do_nothing())


# PostgreSQL: one statement per entry moves the head (locking its row until COMMIT) and inserts
# the entry with the position and hash it got; sha256() computes link() in the database.
_APPEND_PG = text("""
    WITH head AS (
        UPDATE audit_chain
        SET seq = seq + 1, prev_hash = hash,
            hash = encode(sha256(convert_to(hash || ':' || (seq + 1)::text || ':' || :content_hash, 'UTF8')), 'hex')
        WHERE id = :head_id
        RETURNING seq, prev_hash, hash
    )
    INSERT INTO audit_events (at, actor_id, actor_email, action, consult_id, target, ip, detail,
                              seq, prev_hash, hash)
    SELECT CAST(:at AS timestamptz), CAST(:actor_id AS integer), CAST(:actor_email AS varchar),
           CAST(:action AS varchar), CAST(:consult_id AS integer), CAST(:target AS varchar),
           CAST(:ip AS varchar), CAST(:detail AS json), head.seq, head.prev_hash, head.hash
    FROM head
    RETURNING id, seq, prev_hash, hash
""").bindparams(bindparam("at", type_=UTCDateTime()), bindparam("detail", type_=JSON()))


def _append_postgresql(session: Session, pending: list[AuditEvent]) -> None:
    for entry in pending:
        params = {name: getattr(entry, name) for name in CONTENT}
        params.update(content_hash=content_hash_of(entry), head_id=HEAD_ID)
        row = session.execute(_APPEND_PG, params).one_or_none()
        if row is None:
            _missing_head(session)
            row = session.execute(_APPEND_PG, params).one()
        entry.id, entry.seq, entry.prev_hash, entry.hash = row.id, row.seq, row.prev_hash, row.hash
        make_transient_to_detached(entry)  # it is stored: attach it without another INSERT
        session.add(entry)


def _append_portable(session: Session, pending: list[AuditEvent]) -> None:
    """Other databases (SQLite): lock the head with an UPDATE, hash in Python, move the head."""
    reserve = (
        update(AuditChainHead).where(AuditChainHead.id == HEAD_ID)
        .values(seq=AuditChainHead.seq + len(pending))
        .returning(AuditChainHead.seq, AuditChainHead.hash)
    )
    row = session.execute(reserve, execution_options={"synchronize_session": False}).one_or_none()
    if row is None:
        _missing_head(session)
        row = session.execute(reserve, execution_options={"synchronize_session": False}).one()
    seq, prev = row.seq - len(pending), row.hash
    for entry in pending:
        seq += 1
        entry.seq, entry.prev_hash = seq, prev
        entry.hash = prev = hash_of(entry)
        session.add(entry)
    session.flush()
    last = pending[-1]
    session.execute(update(AuditChainHead).where(AuditChainHead.id == HEAD_ID)
                    .values(prev_hash=last.prev_hash, hash=last.hash),
                    execution_options={"synchronize_session": False})


def seal_pending(session: Session) -> None:
    """Chain and insert the entries queued in this transaction, last thing before COMMIT."""
    pending: list[AuditEvent] = session.info.pop(PENDING_KEY, None) or []
    if not pending:
        return
    session.flush()  # the caller's own changes (and their errors) come before the chain lock
    if session.get_bind().dialect.name == "postgresql":
        _append_postgresql(session, pending)
    else:
        _append_portable(session, pending)


@event.listens_for(Session, "before_commit")
def _seal_before_commit(session: Session) -> None:
    seal_pending(session)


@event.listens_for(Session, "after_transaction_end")
def _discard_queue(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost transaction: committed (queue used) or rolled back
        session.info.pop(PENDING_KEY, None)


# --- verifying ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """The first place where the stored chain is not what was written."""

    seq: int | None
    id: int | None
    reason: str

    def __str__(self) -> str:
        where = f"entry seq={self.seq} (id={self.id})" if self.seq is not None else "chain head"
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class Verification:
    """The outcome of checking the whole chain."""

    entries: int
    head_seq: int | None
    head_hash: str | None
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def current_head(session: Session) -> AuditChainHead | None:
    """The chain head as stored (for anchoring it outside the database)."""
    return session.scalars(
        select(AuditChainHead).where(AuditChainHead.id == HEAD_ID)
        .execution_options(populate_existing=True)
    ).one_or_none()


def _check_rows(rows: Iterable[Any]) -> tuple[int, str, Problem | None]:
    """Walk the entries in seq order: (good entries, hash of the last good one, first problem)."""
    expected, prev = 1, GENESIS
    for row in rows:
        if row.seq != expected:
            if row.seq > expected:
                missing = f"entry {expected}" if row.seq == expected + 1 else f"entries {expected}–{row.seq - 1}"
                reason = f"{missing} before it are missing (deleted)"
            else:
                reason = f"out of sequence (expected seq {expected})"
            return expected - 1, prev, Problem(row.seq, row.id, reason)
        if row.prev_hash != prev:
            return expected - 1, prev, Problem(row.seq, row.id, (
                "does not follow the entry before it (prev_hash differs): entries were reordered, "
                "or this one was moved or inserted, or the one before it was rewritten"))
        if hash_of(row) != row.hash:
            return expected - 1, prev, Problem(row.seq, row.id,
                                                     "its content does not match its hash (edited)")
        prev, expected = row.hash, expected + 1
    return expected - 1, prev, None


def verify(session: Session, anchors: Iterable[tuple[int, str]] = ()) -> Verification:
    """Check every entry's hash and link, the chain head, and optional external anchors (seq, hash)."""
    columns = [getattr(AuditEvent, name) for name in ("id", "hash", *HASHED)]
    rows = session.execute(select(*columns).order_by(AuditEvent.seq).execution_options(yield_per=1000))
    count, last_hash, problem = _check_rows(rows)
    rows.close()
    head = current_head(session)
    head_seq, head_hash = (head.seq, head.hash) if head is not None else (None, None)

    def result(problem: Problem | None) -> Verification:
        return Verification(count, head_seq, head_hash, problem)

    if problem is not None:
        return result(problem)
    if head is None:
        return result(Problem(None, None, "missing, but the log has entries") if count else None)
    if head.seq > count:
        gone = head.seq - count
        return result(Problem(None, None, (
            f"is at seq {head.seq} but the log ends at seq {count}: the last {gone} "
            f"entr{'y was' if gone == 1 else 'ies were'} deleted")))
    if head.seq < count:
        extra = session.execute(select(AuditEvent.seq, AuditEvent.id).where(AuditEvent.seq == head.seq + 1)).one()
        return result(Problem(extra.seq, extra.id, f"comes after the chain head (seq {head.seq}): inserted"))
    if head.hash != last_hash:
        return result(Problem(None, None, f"hash {head.hash} differs from the last entry's hash {last_hash}"))
    for seq, expected_hash in anchors:
        stored = session.execute(select(AuditEvent.id, AuditEvent.hash).where(AuditEvent.seq == seq)).one_or_none()
        if stored is None or stored.hash != expected_hash:
            return result(Problem(seq, stored.id if stored else None, (
                f"does not match the external anchor {seq}:{expected_hash} (the chain was rewritten)")))
    return result(None)
