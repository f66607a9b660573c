"""Snapshots: the per-consult row that serialises writers, compacts the document, and fixes it when signed."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from ..audit.services import record
from ..extensions import db
from ..models import Consult, NoteSnapshot, utcnow
from .cache import load
from .document import EMPTY_STATE, SECTIONS

SIGNED_KEY = "huizhen.notes_signed"  # session.info: consults signed in this transaction


def lock_snapshot(consult_id: int) -> NoteSnapshot:
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


def sign_notes(consult: Consult) -> NoteSnapshot:
    """Fix the notes as signed; call inside the sign-off transaction, before its commit."""
    snapshot = lock_snapshot(consult.id)  # waits for an edit in flight, which then is included
    if snapshot.signed_at is not None:
        return snapshot
    live = load(consult.id)  # from the database: never wait on a process lock while holding row locks
    texts = live.texts_now()
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
