"""The audit log's hash chain: entries are sealed at commit and the stored chain can be verified.

Every audit entry carries ``seq`` (its position, 1, 2, 3 … with no gaps), ``prev_hash`` (the
hash of entry ``seq - 1``, or ``GENESIS`` for the first) and ``hash``: SHA-256 over a canonical
serialisation of its content and ``prev_hash``. The single ``audit_chain`` row holds the last
``seq`` and ``hash`` (the chain head), so deleting the newest entries is found too.

``record`` (services.py) only queues an entry on the session; ``seal_pending`` runs in the
session's ``before_commit`` hook, as late as possible in the transaction: it flushes the caller's
changes first, then locks the head row (an UPDATE of that row: a row lock on PostgreSQL, the
write lock on SQLite), numbers and hashes the queued entries, inserts them and moves the head.
Concurrent transactions therefore extend the chain one after the other and can never fork it;
the lock is held only for that INSERT, one UPDATE and the COMMIT.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, insert, select, update
from sqlalchemy.orm import Session, SessionTransaction

from ..models import AuditChainHead, AuditEvent

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


def canonical(*, seq: int, at: datetime, actor_id: int | None, actor_email: str | None, action: str,
              consult_id: int | None, target: str | None, ip: str | None, detail: Any,
              prev_hash: str) -> bytes:
    """The bytes that are hashed for one entry: a JSON array in a fixed order, ASCII only."""
    document = [FORMAT, seq, _time(at), actor_id, actor_email, action, consult_id, target, ip,
                detail if detail is not None else {}, prev_hash]
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def entry_hash(**content: Any) -> str:
    """SHA-256 (hex) of an entry's canonical form; takes the same keywords as ``canonical``."""
    return hashlib.sha256(canonical(**content)).hexdigest()


HASHED = ("seq", "at", "actor_id", "actor_email", "action", "consult_id", "target", "ip", "detail",
          "prev_hash")


def hash_of(entry: Any) -> str:
    """The hash an entry (an AuditEvent or a row with the same attributes) should carry."""
    return entry_hash(**{name: getattr(entry, name) for name in HASHED})


def normalise_detail(detail: dict[str, Any] | None) -> dict[str, Any]:
    """The detail as it will read back from the JSON column (string keys, lists for tuples)."""
    return json.loads(json.dumps(detail or {}))


# --- sealing at commit ------------------------------------------------------------------------------


def queue(session: Session, entry: AuditEvent) -> None:
    """Queue an entry; it is chained and inserted when the session's transaction commits."""
    if not session.in_transaction():
        session.begin()  # so that a rollback or close discards the queue (after_transaction_end)
    session.info.setdefault(PENDING_KEY, []).append(entry)


def _lock_head(session: Session, count: int) -> tuple[int, str]:
    """Lock the chain head, reserve `count` positions; return the last used seq and its hash."""
    reserve = (
        update(AuditChainHead).where(AuditChainHead.id == HEAD_ID)
        .values(seq=AuditChainHead.seq + count)
        .returning(AuditChainHead.seq, AuditChainHead.hash)
    )
    row = session.execute(reserve, execution_options={"synchronize_session": False}).one_or_none()
    if row is None:  # an empty database whose head row was never created (tests empty every table)
        if session.scalar(select(AuditEvent.id).limit(1)) is not None:
            raise AuditChainBroken("the audit chain head is missing; run `flask audit verify`")
        session.execute(_insert_head_if_absent(session))
        row = session.execute(reserve, execution_options={"synchronize_session": False}).one()
    return row.seq - count, row.hash


def _insert_head_if_absent(session: Session):
    values = {"id": HEAD_ID, "seq": 0, "hash": GENESIS}
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(AuditChainHead).values(**values).on_conflict_do_nothing()
    if session.get_bind().dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(AuditChainHead).values(**values).on_conflict_do_nothing()
    return insert(AuditChainHead).values(**values)


def seal_pending(session: Session) -> None:
    """Chain, insert and commit-ready the entries queued in this transaction (before_commit)."""
    pending: list[AuditEvent] = session.info.pop(PENDING_KEY, None) or []
    if not pending:
        return
    session.flush()  # the caller's own changes (and their errors) come before the chain lock
    seq, prev = _lock_head(session, len(pending))
    for entry in pending:
        seq += 1
        entry.seq, entry.prev_hash = seq, prev
        entry.hash = prev = hash_of(entry)
        session.add(entry)
    session.flush()
    session.execute(update(AuditChainHead).where(AuditChainHead.id == HEAD_ID).values(hash=prev),
                    execution_options={"synchronize_session": False})


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
