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

from ..mail import external_url
from ..timefmt import format_local

TITLES: dict[str, str] = {
    "consult.offered": "New {urgency} request in {specialty} offered to you",
    "consult.accepted": "{by} accepted your consult request",
    "consult.booked": "Consultation booked by {by} for {starts_at}",
    "consult.cancelled": "{by} cancelled a consultation",
    "consult.rescheduled": "{by} moved the consultation to {starts_at}",
    "chat.message": "{by} wrote in the consult room",
    "room.waiting": "{by} is waiting in the consult room",
    "recommendation.signed": "{by} signed the recommendation",
    "recommendation.acknowledged": "{by} acknowledged your recommendation",
    "account.registered": "A new registration is waiting for verification: {name}",
    "account.approved": "Your Huizhen account was approved",
    "account.rejected": "Your Huizhen registration was refused",
    "reminder.day": "Reminder: consultation in 24 hours, at {starts_at}",
    "reminder.soon": "Reminder: consultation in 15 minutes, at {starts_at}",
    "request.overdue": "Request not accepted within its target of {target} ({urgency}, {specialty})",
}
KINDS = tuple(TITLES)
ROOM_KINDS = {"chat.message", "room.waiting", "consult.booked", "consult.rescheduled", "reminder.day",
              "reminder.soon"}  # one click joins the room


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "…"


def title(kind: str, params: dict[str, Any], tz: str | None = None) -> str:
    """The one-line text of a notification (safe for email and webhook); times in the zone tz."""
    values = dict(params or {})
    if values.get("starts_at"):
        with contextlib.suppress(TypeError, ValueError):
            values["starts_at"] = format_local(datetime.fromisoformat(values["starts_at"]), tz)
    return TITLES.get(kind, kind.replace(".", " ")).format_map(_Missing(values))


def detail(kind: str, params: dict[str, Any]) -> str:
    """Further in-app text (never sent outside the app)."""
    if kind in ("consult.cancelled", "consult.rescheduled") and params.get("reason"):
        return f"Reason: {params['reason']}"
    if kind == "request.overdue" and params.get("widened"):
        return f"Offers: {params['widened']}."
    if kind == "account.rejected" and params.get("note"):
        return f"Note: {params['note']}"
    return ""


def _endpoint(kind: str, consult_ref: str | None) -> tuple[str, dict[str, Any]]:
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
