"""What a notification says, rendered when shown or sent from its kind and parameters.

Two texts per kind: `title` for every channel (no clinical content: who did what, never the
patient, complaint, chat text or a free-text reason), and `detail` for the in-app list only
(e.g. a cancellation's reason, which the doctors typed and may mention the patient).
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from flask import url_for

from ..i18n import N_, translate
from ..mail import external_url
from ..models import ParticipantRole, Urgency
from ..models.user import specialty_label
from ..timefmt import format_local

TITLES: dict[str, str] = {
    "consult.offered": N_("New %(urgency)s request in %(specialty)s offered to you"),
    "consult.accepted": N_("%(by)s accepted your consult request"),
    "consult.booked": N_("Consultation booked by %(by)s for %(starts_at)s"),
    "consult.cancelled": N_("%(by)s cancelled a consultation"),
    "consult.rescheduled": N_("%(by)s moved the consultation to %(starts_at)s"),
    "chat.message": N_("%(by)s wrote in the consult room"),
    "room.waiting": N_("%(by)s is waiting in the consult room"),
    "recommendation.signed": N_("%(by)s signed the recommendation"),
    "recommendation.acknowledged": N_("%(by)s acknowledged your recommendation"),
    "opinion.signed": N_("%(by)s added a signed second opinion"),
    "participant.invited": N_("%(by)s invites you to take part in a consult as %(role)s"),
    "participant.accepted": N_("%(name)s accepted your invitation to a consult"),
    "participant.declined": N_("%(name)s declined your invitation to a consult"),
    "participant.removed": N_("%(by)s removed you from a consult"),
    "account.registered": N_("A new registration is waiting for verification: %(name)s"),
    "account.approved": N_("Your Huizhen account was approved"),
    "account.rejected": N_("Your Huizhen registration was refused"),
    "reminder.day": N_("Reminder: consultation in 24 hours, at %(starts_at)s"),
    "reminder.soon": N_("Reminder: consultation in 15 minutes, at %(starts_at)s"),
    "request.overdue": N_("Request not accepted within its target of %(target)s (%(urgency)s, %(specialty)s)"),
}
# "New urgent request ..." reads as one sentence per urgency (加急/急诊/常规 agree with the noun in Chinese)
OFFERED: dict[str, str] = {
    "emergency": N_("New emergency request in %(specialty)s offered to you"),
    "urgent": N_("New urgent request in %(specialty)s offered to you"),
    "routine": N_("New routine request in %(specialty)s offered to you"),
}
# An invitation reads as one sentence per role
INVITED: dict[str, str] = {
    "specialist": N_("%(by)s invites you to give a second opinion on a consult"),
    "trainee": N_("%(by)s invites you to a consult as a trainee, to watch and learn"),
}
# What the preferences page lists for each kind (the title without its parameters).
KIND_LABELS: dict[str, str] = {
    "consult.offered": N_("A request is offered to you"),
    "consult.accepted": N_("Your request is accepted"),
    "consult.booked": N_("A consultation is booked"),
    "consult.cancelled": N_("A consultation is cancelled"),
    "consult.rescheduled": N_("A consultation is moved"),
    "chat.message": N_("A message in the consult room"),
    "room.waiting": N_("Someone is waiting in the consult room"),
    "recommendation.signed": N_("A recommendation is signed"),
    "recommendation.acknowledged": N_("Your recommendation is acknowledged"),
    "opinion.signed": N_("A second opinion is signed"),
    "participant.invited": N_("You are invited to a consult"),
    "participant.accepted": N_("Your invitation is accepted"),
    "participant.declined": N_("Your invitation is declined"),
    "participant.removed": N_("You are removed from a consult"),
    "account.registered": N_("A new registration to verify"),
    "account.approved": N_("Your account is approved"),
    "account.rejected": N_("Your registration is refused"),
    "reminder.day": N_("Reminder 24 hours before a consultation"),
    "reminder.soon": N_("Reminder 15 minutes before a consultation"),
    "request.overdue": N_("A request missed its response target"),
}
KINDS = tuple(TITLES)
ROOM_KINDS = {"chat.message", "room.waiting", "consult.booked", "consult.rescheduled", "reminder.day",
              "reminder.soon"}  # one click joins the room
NO_CONSULT_LINK = {"participant.removed"}  # the consult is no longer theirs to open: the dashboard


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "…"


def _urgency_label(value: Any) -> str:
    try:
        return Urgency(value).label
    except ValueError:
        return str(value)


def _role_label(value: Any) -> str:
    try:
        return ParticipantRole(value).label
    except ValueError:
        return str(value)


def title(kind: str, params: dict[str, Any], tz: str | None = None) -> str:
    """The one-line text of a notification (safe for email and webhook) in the current language;
    times in the zone tz."""
    values = dict(params or {})
    if values.get("starts_at"):
        with contextlib.suppress(TypeError, ValueError):
            values["starts_at"] = format_local(datetime.fromisoformat(values["starts_at"]), tz)
    if values.get("specialty"):
        values["specialty"] = specialty_label(values["specialty"])
    if kind == "request.overdue" and isinstance(values.get("target_minutes"), (int, float)):
        from .reminders import describe

        values["target"] = describe(values["target_minutes"])
    msgid = TITLES.get(kind)
    if msgid is None:
        return kind.replace(".", " ")
    if kind == "consult.offered" and values.get("urgency") in OFFERED:
        msgid = OFFERED[values["urgency"]]
    elif kind == "participant.invited" and values.get("role") in INVITED:
        msgid = INVITED[values["role"]]
    elif values.get("urgency"):
        values["urgency"] = _urgency_label(values["urgency"])
    if values.get("role"):
        values["role"] = _role_label(values["role"])
    return translate(msgid) % _Missing(values)


def kind_label(kind: str) -> str:
    """What a kind of notification is about, in the current language (the preferences page)."""
    return translate(KIND_LABELS[kind]) if kind in KIND_LABELS else kind


def detail(kind: str, params: dict[str, Any]) -> str:
    """Further in-app text (never sent outside the app), in the current language."""
    if kind in ("consult.cancelled", "consult.rescheduled") and params.get("reason"):
        return translate(N_("Reason: %(reason)s"), {"reason": params["reason"]})
    if kind == "request.overdue" and isinstance(params.get("widened_count"), int):
        from flask_babel import ngettext

        count = params["widened_count"]
        if not count:
            return translate(N_("Offers: all eligible specialists were already offered it."))
        return ngettext("Offers: offered to %(num)s more specialist.",
                        "Offers: offered to %(num)s more specialists.", count)
    if kind == "request.overdue" and params.get("widened"):
        return translate(N_("Offers: %(widened)s."), {"widened": params["widened"]})
    if kind == "account.rejected" and params.get("note"):
        return translate(N_("Note: %(note)s"), {"note": params["note"]})
    return ""


def _endpoint(kind: str, consult_ref: str | None) -> tuple[str, dict[str, Any]]:
    if kind in NO_CONSULT_LINK:
        return "dashboard.index", {}
    if consult_ref and kind in ROOM_KINDS:
        return "rooms.room", {"ref": consult_ref}
    if consult_ref:
        return "consults.view", {"ref": consult_ref}
    if kind == "account.registered":
        return "admin.registrations", {}
    return "dashboard.index", {}


def link(kind: str, consult_ref: str | None) -> str:
    """The page a notification opens, as a path for the app."""
    endpoint, values = _endpoint(kind, consult_ref)
    return url_for(endpoint, **values)


def external_link(kind: str, consult_ref: str | None) -> str:
    """The page a notification opens, as an absolute link for email and webhook (PUBLIC_URL)."""
    endpoint, values = _endpoint(kind, consult_ref)
    return external_url(endpoint, **values)
