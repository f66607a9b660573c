"""Shared case notes: one pycrdt document per consult, persisted update by update.

The database is the truth: every accepted update is a ``NoteUpdate`` row, ``NoteSnapshot`` holds
the merged document up to some update id (rewritten every ``NOTES_SNAPSHOT_EVERY`` updates), so
loading a document is "snapshot + the updates after it", and the update rows replayed in order are
the revision history. This module is the domain's front door; the work is split by responsibility:

- ``access``: who may read and edit (asked of ``consults.policy``);
- ``limits``: settings, the per-user update rate, the size and shape of client data;
- ``document``: the sections and the in-memory document;
- ``cache``: each app's live documents, caught up from the database before every use;
- ``updates``: the hot path (merge + persist an update) and syncing clients;
- ``snapshots``: the writers' row lock, compaction and the signed version;
- ``history``: revisions and past versions;
- ``state``: the per-app state (cache, limiters, editors) in ``app.extensions``.
"""

from __future__ import annotations

from .access import can_edit, can_open, member_consult, open_notes, still_opens
from .cache import forget
from .document import EMPTY_STATE, SECTION_LABELS, SECTIONS, section_labels
from .history import Revision, SectionChange, history, text_at
from .limits import DEFAULTS, TooManyUpdates, check_rate, check_state_vector, check_update, reset_rate_limits, setting
from .snapshots import SIGNED_KEY, sign_notes, signed_at, signed_notes
from .updates import (
    CLOSED,
    OPEN_NOTES,
    Applied,
    NotesReadOnly,
    apply_update,
    full_state,
    load_from_database,
    state_vector,
    sync,
    sync_step,
    text_of,
)

__all__ = [
    "CLOSED", "DEFAULTS", "EMPTY_STATE", "OPEN_NOTES", "SECTIONS", "SECTION_LABELS", "SIGNED_KEY",
    "Applied", "NotesReadOnly", "Revision", "SectionChange", "TooManyUpdates",
    "apply_update", "can_edit", "can_open", "check_rate", "check_state_vector", "check_update", "forget",
    "full_state", "history", "load_from_database", "member_consult", "open_notes", "reset_rate_limits",
    "section_labels", "setting", "sign_notes", "signed_at", "signed_notes", "state_vector", "still_opens", "sync",
    "sync_step", "text_at", "text_of",
]
