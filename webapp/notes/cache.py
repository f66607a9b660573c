"""The live document cache: each app keeps recent consults' documents, caught up from the database.

The database is the truth; a cached document only saves replaying it. Before every use a document
is caught up with the updates stored after the last one it applied, so a restart or another worker
gives the same document. Lock order: database first; a document's in-process lock only ever guards
in-memory work, and the cache's lock only the dict.
"""

from __future__ import annotations

from sqlalchemy import select

from ..extensions import db
from ..models import NoteSnapshot, NoteUpdate
from .document import LiveDoc, new_live
from .limits import setting
from .state import notes_state


def rows_after(consult_id: int, after: int) -> list[tuple[int, bytes]]:
    """The consult's stored updates after the given id, in order: (id, update)."""
    return [(row_id, bytes(data)) for row_id, data in db.session.execute(
        select(NoteUpdate.id, NoteUpdate.update)
        .where(NoteUpdate.consult_id == consult_id, NoteUpdate.id > after)
        .order_by(NoteUpdate.id)
    ).all()]


def apply_rows(live: LiveDoc, rows: list[tuple[int, bytes]]) -> None:
    """Apply stored updates the document does not have yet (the caller holds live.lock)."""
    for row_id, data in rows:
        if row_id > live.upto:
            live.doc.apply_update(data)
            live.index(data)
            live.upto = row_id
    live.take_touched()


def load(consult_id: int) -> LiveDoc:
    """Build a document from the database alone: the snapshot, then every update after it."""
    snapshot = db.session.get(NoteSnapshot, consult_id)
    live = new_live(bytes(snapshot.state) if snapshot else None)
    live.upto = snapshot.upto_update_id if snapshot else 0
    apply_rows(live, rows_after(consult_id, live.upto))
    return live


def cached(consult_id: int) -> LiveDoc:
    """The app's document of the consult (loaded on first use; not caught up)."""
    cache = notes_state().cache
    with cache.lock:
        live = cache.docs.get(consult_id)
        if live is not None:
            cache.docs.move_to_end(consult_id)
            return live
    built = load(consult_id)  # database work outside the cache lock
    with cache.lock:
        live = cache.docs.setdefault(consult_id, built)
        cache.docs.move_to_end(consult_id)
        while len(cache.docs) > setting("NOTES_CACHE_SIZE"):
            cache.docs.popitem(last=False)
    return live


def current(consult_id: int) -> LiveDoc:
    """The cached document, caught up with the database.

    Lock order everywhere: database first, then the in-process lock, which only ever guards
    in-memory work. (A thread holding the process lock must never wait for the database while
    another holds a database lock and waits for the process lock.)
    """
    live = cached(consult_id)
    rows = rows_after(consult_id, live.upto)
    with live.lock:
        apply_rows(live, rows)
    return live


def forget(consult_id: int | None = None) -> None:
    """Drop cached documents (one consult, or all: what a restart does); the database stays."""
    cache = notes_state().cache
    with cache.lock:
        if consult_id is None:
            cache.docs.clear()
        else:
            cache.docs.pop(consult_id, None)
