"""What each audit action code means, in words: the one mapping every page and export uses."""

from __future__ import annotations

from ..i18n import N_, translate

ACTION_LABELS: dict[str, str] = {
    "auth.login": N_("Signed in"),
    "auth.login_failed": N_("Sign-in failed"),
    "auth.login_blocked": N_("Sign-in refused (account not active)"),
    "auth.logout": N_("Signed out"),
    "auth.idle_timeout": N_("Signed out after inactivity"),
    "auth.password_changed": N_("Password changed"),
    "auth.password_reset": N_("Password reset with a link"),
    "auth.password_reset_requested": N_("Password reset requested"),
    "auth.suspended": N_("Sessions ended (account suspended)"),
    "account.registered": N_("Registered"),
    "account.registration_for_taken_email": N_("Registration tried with a taken email"),
    "account.approved": N_("Registration approved"),
    "account.rejected": N_("Registration rejected"),
    "account.suspended": N_("Account suspended"),
    "account.reinstated": N_("Account reinstated"),
    "account.reset_link_issued": N_("Password reset link issued"),
    "availability.updated": N_("Availability updated"),
    "availability.leave_added": N_("Leave added"),
    "availability.extra_added": N_("Extra hours added"),
    "availability.exception_removed": N_("Leave or extra hours removed"),
    "calendar.feed_issued": N_("Calendar feed link issued"),
    "calendar.feed_revoked": N_("Calendar feed link revoked"),
    "facility.saved": N_("Facility saved"),
    "partnership.added": N_("Partnership added"),
    "partnership.removed": N_("Partnership removed"),
    "consult.created": N_("Request drafted"),
    "consult.edited": N_("Request edited"),
    "consult.submitted": N_("Request sent"),
    "consult.viewed": N_("Consult viewed"),
    "consult.access_denied": N_("Consult access refused"),
    "consult.accepted": N_("Request accepted"),
    "consult.declined": N_("Request declined"),
    "consult.assigned": N_("Request assigned"),
    "consult.booked": N_("Consultation booked"),
    "consult.rescheduled": N_("Consultation moved to another time"),
    "consult.cancelled": N_("Consult cancelled"),
    "consult.signed": N_("Recommendation signed"),
    "consult.acknowledged": N_("Recommendation acknowledged"),
    "recommendation.draft_saved": N_("Recommendation draft saved"),
    "participant.invited": N_("Participant invited"),
    "participant.joined": N_("Invitation accepted"),
    "participant.declined": N_("Invitation declined"),
    "participant.removed": N_("Participant removed"),
    "attachment.added": N_("Attachment added"),
    "attachment.viewed": N_("Attachment opened"),
    "room.entered": N_("Consult room entered"),
    "room.access_denied": N_("Consult room access refused"),
    "notes.opened": N_("Shared notes opened"),
    "notes.history_viewed": N_("Notes history viewed"),
    "notes.signed": N_("Shared notes signed"),
    "notes.access_denied": N_("Shared notes access refused"),
    "call.joined": N_("Joined the video call"),
    "call.access_denied": N_("Video call access refused"),
    "call.speech_allowed": N_("Trainee allowed to speak in the call"),
    "call.speech_withdrawn": N_("Trainee's leave to speak withdrawn"),
    "audit.exported": N_("Audit log exported"),
}


def action_label(code: str) -> str:
    """The label of an action code in the current language; an unknown code reads as its words
    ("x.some_thing" → "X: some thing")."""
    if code in ACTION_LABELS:
        return translate(ACTION_LABELS[code])
    domain, _, rest = code.partition(".")
    words = rest.replace("_", " ") if rest else ""
    return f"{domain.capitalize()}: {words}" if words else domain.capitalize()
