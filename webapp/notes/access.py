"""Who may read and edit a consult's notes: asked of the consult policy, never decided here."""

from __future__ import annotations

from typing import Any

from ..audit.services import record_now
from ..consults import policy
from ..consults.policy import Action
from ..consults.services import consult_for
from ..extensions import db
from ..models import Consult, User


def can_open(user: User, consult: Consult) -> bool:
    """The consult's participants, and coordinators (who are audited), may read its notes (policy)."""
    return policy.allows(user, consult, Action.OPEN_NOTES)


def can_edit(user: User, consult: Consult) -> bool:
    """Participants the policy lets edit (not trainees), until the consult is signed off or cancelled."""
    return policy.allows(user, consult, Action.EDIT_NOTES)


def may_ever_edit(user: User, consult: Consult) -> bool:
    """Whether the user's standing lets them edit at all (the stage is checked under the writer's lock)."""
    return policy.entitled(user, consult, Action.EDIT_NOTES)


def open_notes(user: User, ref: Any, *, audit: str | None = "notes.opened") -> Consult:
    """The consult whose notes the user may read; a refusal is audited and looks like 404."""
    consult = consult_for(user, ref, can_open, "notes.access_denied")
    if audit:
        record_now(audit, actor=user, consult=consult)
    return consult


def member_consult(user: User, ref: Any) -> Consult:
    """Re-check access for one event (audited only when refused)."""
    return open_notes(user, ref, audit=None)


def still_opens(user: User, consult_id: int) -> bool:
    """Whether the user may still read the notes of a consult joined earlier (removed: no)."""
    consult = db.session.get(Consult, consult_id)
    return consult is not None and can_open(user, consult)
