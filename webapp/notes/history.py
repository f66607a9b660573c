"""Revision history: the stored updates replayed in order, grouped into each author's editing sessions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from ..extensions import db
from ..models import Consult, NoteUpdate
from .document import SECTIONS, new_live
from .limits import setting


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


def _replay(consult: Consult, upto: int | None = None,
            ) -> Iterator[tuple[NoteUpdate, dict[str, tuple[str, str]], dict[str, str]]]:
    """Yield (row, {section: (inserted, removed)}) for each stored update, in order."""
    live = new_live()
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
