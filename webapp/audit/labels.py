"""What each audit action code means, in words: the one mapping every page and export uses."""

from __future__ import annotations

ACTION_LABELS: dict[str, str] = {
    "auth.login": "Signed in",
    "auth.login_failed": "Sign-in failed",
    "auth.login_blocked": "Sign-in refused (account not active)",
    "auth.logout": "Signed out",
    "auth.idle_timeout": "Signed out after inactivity",
    "auth.password_changed": "Password changed",
    "auth.password_reset": "Password reset with a link",
    "auth.password_reset_requested": "Password reset requested",
    "auth.suspended": "Sessions ended (account suspended)",
    "account.registered": "Registered",
    "account.registration_for_taken_email": "Registration tried with a taken email",
    "account.approved": "Registration approved",
    "account.rejected": "Registration rejected",
    "account.suspended": "Account suspended",
    "account.reinstated": "Account reinstated",
    "account.reset_link_issued": "Password reset link issued",
    "availability.updated": "Availability updated",
    "facility.saved": "Facility saved",
    "partnership.added": "Partnership added",
    "partnership.removed": "Partnership removed",
    "consult.created": "Request drafted",
    "consult.edited": "Request edited",
    "consult.submitted": "Request sent",
    "consult.viewed": "Consult viewed",
    "consult.access_denied": "Consult access refused",
    "consult.accepted": "Request accepted",
    "consult.declined": "Request declined",
    "consult.assigned": "Request assigned",
    "consult.booked": "Consultation booked",
    "consult.cancelled": "Consult cancelled",
    "consult.signed": "Recommendation signed",
    "consult.acknowledged": "Recommendation acknowledged",
    "recommendation.draft_saved": "Recommendation draft saved",
    "attachment.added": "Attachment added",
    "attachment.viewed": "Attachment opened",
    "room.entered": "Consult room entered",
    "room.access_denied": "Consult room access refused",
    "notes.opened": "Shared notes opened",
    "notes.history_viewed": "Notes history viewed",
    "notes.signed": "Shared notes signed",
    "notes.access_denied": "Shared notes access refused",
    "call.joined": "Joined the video call",
    "call.access_denied": "Video call access refused",
    "audit.exported": "Audit log exported",
}


def action_label(code: str) -> str:
    """The label of an action code; an unknown code reads as its words ("x.some_thing" → "X: some thing")."""
    if code in ACTION_LABELS:
        return ACTION_LABELS[code]
    domain, _, rest = code.partition(".")
    words = rest.replace("_", " ") if rest else ""
    return f"{domain.capitalize()}: {words}" if words else domain.capitalize()
