"""Shared case notes: one pycrdt document per consult, persisted update by update.

The database is the truth. Every accepted client update is stored as a ``NoteUpdate`` row (its
author, the sections it touched, and the *effective* update: only what was new to the server)
before anyone is told about it. ``NoteSnapshot`` holds the merged document up to some update id,
rewritten every ``NOTES_SNAPSHOT_EVERY`` updates, so loading a document is "snapshot + the
updates after it". Update rows are never deleted: replayed in order they are the revision history.

Writers of one consult are serialised by a row lock on its snapshot row (created on first use);
sign-off takes the same lock, so an edit either lands before the signature (and is in the signed
version) or is refused as read-only. Each process keeps live documents in a small cache that is
caught up from the database (updates after the last one it applied) before every use, so a restart
or another worker gives the same document. Lock order: database first; the in-process lock of a
document only ever guards in-memory work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from pycrdt import Doc, Text
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..audit.services import record, record_now, record_refusal
from ..consults import policy
from ..consults.policy import Action
from ..errors import DomainError, Forbidden, NotFound, ValidationFailed
from ..extensions import db
from ..i18n import N_, translate
from ..models import Consult, ConsultStatus, NoteSnapshot, NoteUpdate, User, utcnow
from ..validation import text_problem
from . import yupdate

log = logging.getLogger(__name__)

SECTIONS: tuple[str, ...] = ("history", "findings", "assessment", "plan")
SECTION_LABELS: dict[str, str] = {  # msgids: translated where shown (section_labels)
    "history": N_("History"),
    "findings": N_("Examination and findings"),
    "assessment": N_("Assessment"),
    "plan": N_("Plan"),
}
OPEN_NOTES = (ConsultStatus.ACCEPTED, ConsultStatus.SCHEDULED, ConsultStatus.COMPLETED, ConsultStatus.CANCELLED)
CLOSED = (ConsultStatus.COMPLETED, ConsultStatus.CANCELLED)
EMPTY_STATE = b"\x00\x00"  # a Yjs v1 update with no structs and no deletions
SIGNED_KEY = "huizhen.notes_signed"  # session.info: consults signed in this transaction

DEFAULTS: dict[str, int] = {
    "NOTES_MAX_UPDATE_BYTES": 64 * 1024,
    "NOTES_MAX_CHARS": 60_000,  # all sections together
    "NOTES_SNAPSHOT_EVERY": 100,
    "NOTES_UPDATES_PER_SECOND": 40,
    "NOTES_CACHE_SIZE": 256,
    "NOTES_HISTORY_GROUP_SECONDS": 120,
}


class NotesReadOnly(DomainError):
    status = 409
    code = "read_only"


class TooManyUpdates(DomainError):
    status = 429
    code = "rate_limited"


def section_labels() -> dict[str, str]:
    """Each section's label in the current language, in section order."""
    return {name: translate(SECTION_LABELS[name]) for name in SECTIONS}


def setting(name: str) -> int:
    """A notes setting from the app config, with its default."""
    return int(current_app.config.get(name, DEFAULTS[name]))


# --- access ------------------------------------------------------------------------------------


def can_open(user: User, consult: Consult) -> bool:
    """The consult's participants, and coordinators (who are audited), may read its notes (policy)."""
    return policy.allows(user, consult, Action.OPEN_NOTES)


def can_edit(user: User, consult: Consult) -> bool:
    """Participants the policy lets edit (not trainees), until the consult is signed off or cancelled."""
    return policy.allows(user, consult, Action.EDIT_NOTES)


def open_notes(user: User, ref: Any, *, audit: str | None = "notes.opened") -> Consult:
    """The consult whose notes the user may read; a refusal is audited and looks like 404."""
    if not isinstance(ref, str) or not ref or len(ref) > 32 or text_problem(ref):
        raise ValidationFailed("A consult reference is required.")
    consult = db.session.scalar(select(Consult).where(Consult.ref == ref))
    if consult is None:
        raise NotFound("No such consult.")
    if not can_open(user, consult):
        record_refusal("notes.access_denied", actor=user, consult=consult)
        raise NotFound("No such consult.")
    if audit:
        record_now(audit, actor=user, consult=consult)
    return consult


def member_consult(user: User, ref: Any) -> Consult:
    """Re-check access for one event (audited only when refused)."""
    return open_notes(user, ref, audit=None)


_limiters: dict[str, MovingWindowRateLimiter] = {}


def check_rate(user: User) -> None:
    """Refuse a client sending more than NOTES_UPDATES_PER_SECOND (nothing is lost: it resyncs)."""
    uri = current_app.config["RATELIMIT_STORAGE_URI"]
    if uri not in _limiters:
        _limiters[uri] = MovingWindowRateLimiter(storage_from_string(uri))
    try:
        allowed = _limiters[uri].hit(RateLimitItemPerSecond(setting("NOTES_UPDATES_PER_SECOND")), "notes", str(user.id))
    except Exception:  # the limiter's storage is down: do not refuse clinical notes over it
        current_app.logger.warning("notes rate limiter unavailable; allowing update")
        return
    if not allowed:
        raise TooManyUpdates(N_("Edits are arriving too fast; they will be sent again in a moment."))


# --- live documents ------------------------------------------------------------------------------


@dataclass
class _Live:
    """One consult's document in this process, caught up to update `upto`."""

    doc: Doc
    texts: dict[str, Text]
    upto: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    touched: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    subscriptions: list[Any] = field(default_factory=list)
    low_surrogates: set[tuple[int, int]] = field(default_factory=set)  # see yupdate.cuts_surrogate_pair

    def index(self, data: bytes) -> None:
        """Remember where the second halves of astral characters are in stored content."""
        try:
            self.low_surrogates |= yupdate.read_update(data, frozenset(SECTIONS)).low_surrogates
        except yupdate.MalformedUpdate:  # not expected for stored updates; the check is then partial
            log.warning("a stored notes update could not be indexed")

    def take_touched(self) -> dict[str, list[dict[str, Any]]]:
        touched, self.touched = self.touched, {}
        return touched


def _new_live(state: bytes | None = None) -> _Live:
    doc = Doc()
    texts = {name: doc.get(name, type=Text) for name in SECTIONS}
    live = _Live(doc=doc, texts=texts)
    for name, text in texts.items():
        live.subscriptions.append(text.observe(_collector(live, name)))
    if state:
        doc.apply_update(state)
        live.index(state)
        live.take_touched()
    return live


def _collector(live: _Live, name: str) -> Callable[[Any], None]:
    def on_change(event: Any) -> None:
        live.touched.setdefault(name, []).extend(event.delta)

    return on_change


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.docs: OrderedDict[int, _Live] = OrderedDict()


def _cache() -> _Cache:
    return current_app.extensions.setdefault("huizhen.notes_cache", _Cache())


def _rows_after(consult_id: int, after: int) -> list[tuple[int, bytes]]:
    return [(row_id, bytes(data)) for row_id, data in db.session.execute(
        select(NoteUpdate.id, NoteUpdate.update)
        .where(NoteUpdate.consult_id == consult_id, NoteUpdate.id > after)
        .order_by(NoteUpdate.id)
    ).all()]


def _apply_rows(live: _Live, rows: list[tuple[int, bytes]]) -> None:
    """Apply stored updates the document does not have yet (the caller holds live.lock)."""
    for row_id, data in rows:
        if row_id > live.upto:
            live.doc.apply_update(data)
            live.index(data)
            live.upto = row_id
    live.take_touched()


def _current(consult_id: int) -> _Live:
    """The cached document, caught up with the database.

    Lock order everywhere: database first, then the in-process lock, which only ever guards
    in-memory work. (A thread holding the process lock must never wait for the database while
    another holds a database lock and waits for the process lock.)
    """
    live = _live(consult_id)
    rows = _rows_after(consult_id, live.upto)
    with live.lock:
        _apply_rows(live, rows)
    return live


def _load(consult_id: int) -> _Live:
    """Build a document from the database: the snapshot, then every update after it."""
    snapshot = db.session.get(NoteSnapshot, consult_id)
    live = _new_live(bytes(snapshot.state) if snapshot else None)
    live.upto = snapshot.upto_update_id if snapshot else 0
    _apply_rows(live, _rows_after(consult_id, live.upto))
    return live


def _live(consult_id: int) -> _Live:
    cache = _cache()
    with cache.lock:
        live = cache.docs.get(consult_id)
        if live is not None:
            cache.docs.move_to_end(consult_id)
            return live
    built = _load(consult_id)  # database work outside the cache lock
    with cache.lock:
        live = cache.docs.setdefault(consult_id, built)
        cache.docs.move_to_end(consult_id)
        while len(cache.docs) > setting("NOTES_CACHE_SIZE"):
            cache.docs.popitem(last=False)
    return live


def forget(consult_id: int | None = None) -> None:
    """Drop cached documents (one consult, or all: what a restart does); the database stays."""
    cache = _cache()
    with cache.lock:
        if consult_id is None:
            cache.docs.clear()
        else:
            cache.docs.pop(consult_id, None)


def _lock_snapshot(consult_id: int) -> NoteSnapshot:
    """Lock the consult's snapshot row (creating it on first use): one notes writer at a time."""
    stmt = update(NoteSnapshot).where(NoteSnapshot.consult_id == consult_id).values(updated_at=utcnow())
    if db.session.execute(stmt).rowcount == 0:
        try:
            with db.session.begin_nested():
                db.session.execute(insert(NoteSnapshot).values(
                    consult_id=consult_id, state=EMPTY_STATE, upto_update_id=0, updated_at=utcnow()))
        except IntegrityError:  # another writer created it first; wait for its lock
            db.session.execute(stmt)
    return db.session.scalars(
        select(NoteSnapshot).where(NoteSnapshot.consult_id == consult_id).execution_options(populate_existing=True)
    ).one()


# --- the use cases -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """The outcome of one client update: the stored row id (None if nothing was new)."""

    id: int | None
    update: bytes
    sections: tuple[str, ...]

    @property
    def duplicate(self) -> bool:
        return self.id is None


# what _as_bytes checks -> (not binary, too large) messages, whole sentences for the catalog
_BYTES_MESSAGES = {
    "update": (N_("The notes update must be binary."),
               N_("The notes update is too large (%(size)s bytes; the limit is %(limit)s).")),
    "state vector": (N_("The state vector must be binary."),
                     N_("The state vector is too large (%(size)s bytes; the limit is %(limit)s).")),
}


def _as_bytes(value: Any, what: str, limit: int) -> bytes:
    not_binary, too_large = _BYTES_MESSAGES[what]
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise ValidationFailed(not_binary)
    if len(value) > limit:
        raise ValidationFailed(too_large, size=len(value), limit=limit)
    return value


def check_update(data: Any) -> tuple[bytes, yupdate.UpdateShape]:
    """Validate a client update's type, size and structure (plain text in known sections only)."""
    raw = _as_bytes(data, "update", setting("NOTES_MAX_UPDATE_BYTES"))
    try:
        return raw, yupdate.read_update(raw, frozenset(SECTIONS))
    except yupdate.MalformedUpdate as exc:
        raise ValidationFailed("The notes update is not valid: %(problem)s.", problem=str(exc)) from None


def check_state_vector(data: Any) -> bytes:
    """Validate a client's state vector (empty means 'I have nothing')."""
    if data is None or data == b"":
        return b"\x00"
    raw = _as_bytes(data, "state vector", 64 * 1024)
    try:
        yupdate.read_state_vector(raw)
    except yupdate.MalformedUpdate as exc:
        raise ValidationFailed("The state vector is not valid: %(problem)s.", problem=str(exc)) from None
    return raw


class _Refused(ValidationFailed):
    """A refusal raised before the live document was changed."""


def apply_update(user: User, consult: Consult, data: Any) -> Applied:
    """Merge a party's update into the consult's notes and persist it before it is acknowledged."""
    if not policy.entitled(user, consult, Action.EDIT_NOTES):  # who; the status is checked under the lock
        raise Forbidden("Only the consult's doctors edit its notes.")
    raw, shape = check_update(data)
    consult_id, author_id = consult.id, user.id
    live = _live(consult_id)
    # End any transaction the caller has open, so the lock below starts a fresh one (SQLite
    # would otherwise refuse to upgrade a stale read snapshot to a write).
    db.session.commit()
    try:
        snapshot = _lock_snapshot(consult_id)  # one writer per consult from here to the commit
        status = db.session.scalar(select(Consult.status).where(Consult.id == consult_id))
        if status in CLOSED:
            raise NotesReadOnly(N_("These notes were signed off or closed; they are read-only now."))
        if status not in OPEN_NOTES:
            raise Forbidden("The notes open once a specialist has accepted the consult.")
        rows = _rows_after(consult_id, live.upto)
        since_snapshot = db.session.scalar(select(func.count()).select_from(NoteUpdate).where(
            NoteUpdate.consult_id == consult_id, NoteUpdate.id > snapshot.upto_update_id))
    except Exception:
        db.session.rollback()
        raise
    effective: list[bytes] = []
    compacted: bytes | None = None
    try:
        with live.lock:  # in-memory work only
            _apply_rows(live, rows)
            missing = yupdate.missing_dependencies(shape, yupdate.read_state_vector(live.doc.get_state()))
            if missing:
                raise _Refused(N_("The update depends on changes the server does not have (%(missing)s); "
                                  "sync again."), missing=missing)
            if yupdate.cuts_surrogate_pair(shape, live.low_surrogates):
                raise _Refused(N_("The update splits a character in two; it was refused."))
            subscription = live.doc.observe(lambda event: effective.append(event.update))
            try:
                live.doc.apply_update(raw)
            finally:
                live.doc.unobserve(subscription)
            touched = live.take_touched()
            live.low_surrogates |= shape.low_surrogates
            after = yupdate.read_state_vector(live.doc.get_state())
            for client, ranges in shape.ranges.items():
                if after.get(client, 0) < max(end for _, end in ranges):
                    raise ValidationFailed("The update could not be merged completely; sync again.")
            total = sum(len(str(text)) for text in live.texts.values())
            if effective and total > setting("NOTES_MAX_CHARS"):
                raise ValidationFailed("The notes are limited to %(limit)s characters.",
                                       limit=setting("NOTES_MAX_CHARS"))
            if effective and since_snapshot + 1 >= setting("NOTES_SNAPSHOT_EVERY"):
                compacted = live.doc.get_update()
        if not effective:  # everything in it was already known: nothing to store or send
            db.session.rollback()
            return Applied(None, b"", ())
        sections = tuple(name for name in SECTIONS if name in touched)
        row = NoteUpdate(consult_id=consult_id, author_id=author_id, update=effective[0],
                         sections=",".join(sections))
        db.session.add(row)
        db.session.flush()
        row_id = row.id
        if compacted is not None:
            snapshot.state = compacted
            snapshot.upto_update_id = row_id
        db.session.commit()
        with live.lock:
            live.upto = max(live.upto, row_id)  # every earlier row was applied above, under the row lock
        return Applied(row_id, effective[0], sections)
    except _Refused as exc:  # refused before touching the document
        db.session.rollback()
        raise ValidationFailed(exc.template, **exc.params) from None
    except BaseException:  # the live document may hold what the database does not: rebuild it
        db.session.rollback()
        forget(consult_id)
        raise


def sync(consult: Consult, client_state: Any) -> tuple[bytes, bytes]:
    """What the client lacks (an update) and the server's state vector, taken together."""
    vector = check_state_vector(client_state)
    live = _current(consult.id)
    with live.lock:
        try:
            diff = live.doc.get_update(vector)
        except Exception:
            raise ValidationFailed("The state vector is not valid.") from None
        return diff, live.doc.get_state()


def sync_step(consult: Consult, client_state: Any) -> bytes:
    """The update a client with this state vector needs to catch up with the server."""
    return sync(consult, client_state)[0]


def state_vector(consult: Consult) -> bytes:
    """The server's state vector for the consult's notes."""
    return sync(consult, None)[1]


def text_of(consult: Consult) -> dict[str, str]:
    """The current text of every section."""
    live = _current(consult.id)
    with live.lock:
        return {name: str(text) for name, text in live.texts.items()}


def full_state(consult: Consult) -> bytes:
    """The whole document as one update (what a new client would receive)."""
    return sync_step(consult, None)


def load_from_database(consult: Consult) -> tuple[dict[str, str], bytes]:
    """Rebuild the document from the database alone (no cache): its text and state vector."""
    live = _load(consult.id)
    return {name: str(text) for name, text in live.texts.items()}, live.doc.get_state()


def sign_notes(consult: Consult) -> NoteSnapshot:
    """Fix the notes as signed; call inside the sign-off transaction, before its commit."""
    snapshot = _lock_snapshot(consult.id)  # waits for an edit in flight, which then is included
    if snapshot.signed_at is not None:
        return snapshot
    live = _load(consult.id)  # from the database: never wait on a process lock while holding row locks
    texts = {name: str(text) for name, text in live.texts.items()}
    snapshot.state = live.doc.get_update()
    snapshot.upto_update_id = live.upto
    snapshot.signed_text = json.dumps(texts, ensure_ascii=False)
    snapshot.signed_at = utcnow()
    record("notes.signed", consult=consult, detail={
        "upto_update_id": live.upto,
        "sha256": hashlib.sha256(snapshot.signed_text.encode()).hexdigest(),
    })
    db.session.info.setdefault(SIGNED_KEY, set()).add(consult.id)
    return snapshot


def signed_notes(consult: Consult) -> dict[str, str] | None:
    """The signed version of the notes (section -> text), or None if not signed."""
    snapshot = db.session.get(NoteSnapshot, consult.id)
    if snapshot is None or snapshot.signed_text is None:
        return None
    texts = json.loads(snapshot.signed_text)
    return {name: texts.get(name, "") for name in SECTIONS}


def signed_at(consult: Consult) -> datetime | None:
    """When the notes were signed, if they were."""
    snapshot = db.session.get(NoteSnapshot, consult.id)
    return snapshot.signed_at if snapshot is not None else None


# --- revision history ------------------------------------------------------------------------------


@dataclass
class SectionChange:
    """Characters added and removed in one section, with short samples of each."""

    added: int = 0
    removed: int = 0
    added_sample: str = ""
    removed_sample: str = ""


@dataclass
class Revision:
    """One author's editing session (updates without a long pause): who changed what, when."""

    first_id: int
    last_id: int
    author_id: int
    author_name: str
    started_at: datetime
    ended_at: datetime
    updates: int = 0
    changes: dict[str, SectionChange] = field(default_factory=dict)

    @property
    def added(self) -> int:
        return sum(c.added for c in self.changes.values())

    @property
    def removed(self) -> int:
        return sum(c.removed for c in self.changes.values())

    @property
    def minutes(self) -> int:
        """How long the session lasted, in whole minutes."""
        return int((self.ended_at - self.started_at).total_seconds() // 60)


SAMPLE_CHARS = 120


def _apply_delta(before: str, delta: list[dict[str, Any]]) -> tuple[str, str, str]:
    """Apply a pycrdt text delta (UTF-8 byte offsets) to `before`: (after, inserted, removed)."""
    data = before.encode("utf-8")
    out, inserted, removed, pos = [], [], [], 0
    for op in delta:
        if "retain" in op:
            out.append(data[pos:pos + op["retain"]])
            pos += op["retain"]
        elif "delete" in op:
            removed.append(data[pos:pos + op["delete"]])
            pos += op["delete"]
        elif "insert" in op and isinstance(op["insert"], str):
            piece = op["insert"].encode("utf-8")
            out.append(piece)
            inserted.append(piece)
    out.append(data[pos:])
    return _joined(out), _joined(inserted), _joined(removed)


def _joined(parts: list[bytes]) -> str:
    return b"".join(parts).decode("utf-8", errors="replace")


def _replay(consult: Consult, upto: int | None = None):
    """Yield (row, {section: (inserted, removed)}) for each stored update, in order."""
    live = _new_live()
    current = dict.fromkeys(SECTIONS, "")
    query = select(NoteUpdate).where(NoteUpdate.consult_id == consult.id).order_by(NoteUpdate.id)
    if upto is not None:
        query = query.where(NoteUpdate.id <= upto)
    for row in db.session.scalars(query.execution_options(yield_per=500)):
        live.doc.apply_update(bytes(row.update))
        changes = {}
        for name, delta in live.take_touched().items():
            current[name], inserted, removed = _apply_delta(current[name], delta)
            changes[name] = (inserted, removed)
        yield row, changes, current


def history(consult: Consult, group_seconds: int | None = None) -> list[Revision]:
    """The revisions, oldest first: each author's editing session and what it added and removed.

    Two people often type at the same time, so an author's updates are grouped with their own
    previous ones (until a pause longer than NOTES_HISTORY_GROUP_SECONDS), not only when adjacent.
    """
    gap = timedelta(seconds=setting("NOTES_HISTORY_GROUP_SECONDS") if group_seconds is None else group_seconds)
    revisions: list[Revision] = []
    open_by_author: dict[int, Revision] = {}
    for row, changes, _ in _replay(consult):
        rev = open_by_author.get(row.author_id)
        if rev is None or gap <= timedelta(0) or row.created_at - rev.ended_at > gap:
            name = rev.author_name if rev is not None else row.author.full_name
            rev = Revision(row.id, row.id, row.author_id, name, row.created_at, row.created_at)
            open_by_author[row.author_id] = rev
            revisions.append(rev)
        rev.last_id, rev.ended_at = row.id, row.created_at
        rev.updates += 1
        for name, (inserted, removed) in changes.items():
            change = rev.changes.setdefault(name, SectionChange())
            change.added += len(inserted)
            change.removed += len(removed)
            if len(change.added_sample) < SAMPLE_CHARS:
                change.added_sample = (change.added_sample + inserted)[:SAMPLE_CHARS]
            if len(change.removed_sample) < SAMPLE_CHARS:
                change.removed_sample = (change.removed_sample + removed)[:SAMPLE_CHARS]
    for revision in revisions:  # keep the section order stable for display
        revision.changes = {name: revision.changes[name] for name in SECTIONS if name in revision.changes}
    return revisions


def text_at(consult: Consult, upto_update_id: int) -> dict[str, str]:
    """The notes as they were right after the given update."""
    current = dict.fromkeys(SECTIONS, "")
    for _, _, texts in _replay(consult, upto_update_id):
        current = texts
    return dict(current)
