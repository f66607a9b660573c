"""Signing a clinical record: the lead's recommendation and a second specialist's opinion alike.

A signed row carries its signing time and the sha256 of what it says (``signed_content()`` of the
model, which names the consult, the author, the text and the time); the signature is audited in the
same transaction. ``verify`` recomputes the hash, so a row changed afterwards shows as not matching.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Protocol

from ..audit.services import record
from ..models import Consult, User, utcnow


class Signable(Protocol):
    """A model with a signing time, a content hash and what the hash covers."""

    signed_at: Any
    content_sha256: Any

    def signed_content(self) -> dict: ...


def content_hash(row: Signable) -> str:
    """The sha256 of the row's signed content, in a stable JSON form."""
    return hashlib.sha256(json.dumps(row.signed_content(), sort_keys=True).encode()).hexdigest()


def sign(row: Signable, *, actor: User, consult: Consult, event: str, detail: dict[str, Any] | None = None,
         at: datetime | None = None) -> str:
    """Sign the row now (or at ``at``): its time, its hash and the audit event (no commit); the hash."""
    row.signed_at = at or utcnow()
    row.content_sha256 = content_hash(row)
    record(event, actor=actor, consult=consult, detail={**(detail or {}), "sha256": row.content_sha256})
    return row.content_sha256


def verify(row: Signable) -> bool:
    """Whether the signed row still matches the hash taken at signing."""
    return row.signed_at is not None and row.content_sha256 == content_hash(row)
