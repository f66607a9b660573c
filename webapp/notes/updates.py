"""The hot path: merging a client's update (persisted before it is acknowledged) and syncing clients.

Every accepted client update is stored as a ``NoteUpdate`` row (its author, the sections it touched,
and the *effective* update: only what was new to the server) before anyone is told about it.
Writers of one consult are serialised by a row lock on its snapshot row; sign-off takes the same
lock, so an edit either lands before the signature (and is in the signed version) or is refused as
read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from ..errors import DomainError, Forbidden, ValidationFailed
from ..extensions import db
from ..i18n import N_
from ..models import Consult, ConsultStatus, NoteUpdate, User
from . import yupdate
from .access import may_ever_edit
from .cache import apply_rows, cached, current, forget, load, rows_after
from .document import SECTIONS
from .limits import check_state_vector, check_update, setting
from .snapshots import lock_snapshot

OPEN_NOTES = (ConsultStatus.ACCEPTED, ConsultStatus.SCHEDULED, ConsultStatus.COMPLETED, ConsultStatus.CANCELLED)
CLOSED = (ConsultStatus.COMPLETED, ConsultStatus.CANCELLED)


class NotesReadOnly(DomainError):
    status = 409
    code = "read_only"


@dataclass(frozen=True)
class Applied:
    """The outcome of one client update: the stored row id (None if nothing was new)."""

    id: int | None
    update: bytes
    sections: tuple[str, ...]

    @property
    def duplicate(self) -> bool:
        return self.id is None


class _Refused(ValidationFailed):
    """A refusal raised before the live document was changed."""


def apply_update(user: User, consult: Consult, data: Any) -> Applied:
    """Merge a party's update into the consult's notes and persist it before it is acknowledged."""
    if not may_ever_edit(user, consult):  # who; the status is checked under the lock
        raise Forbidden("Only the consult's doctors edit its notes.")
    raw, shape = check_update(data)
    consult_id, author_id = consult.id, user.id
    live = cached(consult_id)
    # End any transaction the caller has open, so the lock below starts a fresh one (SQLite
    # would otherwise refuse to upgrade a stale read snapshot to a write).
    db.session.commit()
    try:
        snapshot = lock_snapshot(consult_id)  # one writer per consult from here to the commit
        status = db.session.scalar(select(Consult.status).where(Consult.id == consult_id))
        if status in CLOSED:
            raise NotesReadOnly(N_("These notes were signed off or closed; they are read-only now."))
        if status not in OPEN_NOTES:
            raise Forbidden("The notes open once a specialist has accepted the consult.")
        rows = rows_after(consult_id, live.upto)
        since_snapshot = db.session.scalar(select(func.count()).select_from(NoteUpdate).where(
            NoteUpdate.consult_id == consult_id, NoteUpdate.id > snapshot.upto_update_id))
    except Exception:
        db.session.rollback()
        raise
    effective: list[bytes] = []
    compacted: bytes | None = None
    try:
        with live.lock:  # in-memory work only
            apply_rows(live, rows)
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
    live = current(consult.id)
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
    live = current(consult.id)
    with live.lock:
        return live.texts_now()


def full_state(consult: Consult) -> bytes:
    """The whole document as one update (what a new client would receive)."""
    return sync_step(consult, None)


def load_from_database(consult: Consult) -> tuple[dict[str, str], bytes]:
    """Rebuild the document from the database alone (no cache): its text and state vector."""
    live = load(consult.id)
    return live.texts_now(), live.doc.get_state()
