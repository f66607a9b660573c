"""Delivering the outbox: claim due deliveries under a lease, send by email or webhook, retry with backoff.

Runs in the delivery worker process (webapp/notifications/worker.py), never in a web worker.
A claim is one statement: on PostgreSQL `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED
LIMIT n)`, so concurrent workers never claim the same row; on SQLite (one writer at a time, one
worker) the same UPDATE without the lock clause. The claim sets `leased_until`; a worker killed
before finishing leaves its claimed rows to be claimed again once the lease has passed. Each
delivery is marked sent (or rescheduled) in its own short transaction right after it was sent,
and only by the worker that still holds its lease.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from html import escape
from typing import Any

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import or_, select, update

from ..extensions import db
from ..i18n import speaking, user_locale
from ..mail import Attachment, build_message, external_url, transmit
from ..models import Delivery, Notification, utcnow
from ..scheduling.calendar import invitation_ics
from . import texts

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """The channel refused or could not be reached (retried with backoff)."""


def backoff(attempts: int) -> timedelta:
    """How long to wait after the attempts-th failed attempt: base × 2^(attempts-1), capped."""
    config = current_app.config
    seconds = config["NOTIFY_RETRY_BASE_SECONDS"] * 2 ** max(0, attempts - 1)
    return timedelta(seconds=min(seconds, config["NOTIFY_RETRY_MAX_SECONDS"]))


def claim(now: datetime | None = None, limit: int | None = None) -> list[tuple[int, datetime]]:
    """Lease the due deliveries (id order) to this worker; their ids and the lease, committed."""
    now = now or utcnow()
    limit = limit or current_app.config["NOTIFY_BATCH"]
    lease = now + timedelta(seconds=current_app.config["NOTIFY_LEASE_SECONDS"])
    due = (select(Delivery.id)
           .where(Delivery.status == "pending", Delivery.next_attempt_at <= now,
                  or_(Delivery.leased_until.is_(None), Delivery.leased_until <= now))
           .order_by(Delivery.id).limit(limit))
    if db.session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = db.session.scalars(
        update(Delivery).where(Delivery.id.in_(due.scalar_subquery()))
        .values(leased_until=lease, attempts=Delivery.attempts + 1)
        .returning(Delivery.id), execution_options={"synchronize_session": False}).all()
    db.session.commit()
    return [(i, lease) for i in sorted(ids)]


def _payload(note: Notification, delivery: Delivery) -> dict[str, Any]:
    """What leaves the system: what happened and the link, never clinical content."""
    ref = note.consult.ref if note.consult is not None else None
    return {"delivery": delivery_key(delivery), "kind": note.kind,
            "title": texts.title(note.kind, note.params, note.user.timezone),
            "link": texts.external_link(note.kind, ref), "urgent": note.urgent,
            "created_at": note.created_at.isoformat(),
            "recipient": {"id": note.user_id, "email": note.user.email}}


def delivery_key(delivery: Delivery) -> str:
    """A stable id of one delivery: the same on a retry, so a receiver can drop a repeat."""
    return f"huizhen-{delivery.notification_id}-{delivery.channel}"


INVITE_KINDS = frozenset({"consult.booked", "consult.rescheduled", "consult.cancelled"})


def invitation(note: Notification) -> list[Attachment]:
    """The .ics invitation a booking, reschedule or cancel email carries (none if never booked)."""
    if note.kind not in INVITE_KINDS or note.consult is None:
        return []
    built = invitation_ics(note.consult, note.user.email, external_url("consults.view", ref=note.consult.ref))
    if built is None:
        return []
    ics, method = built
    return [Attachment("invitation.ics", ics, "text/calendar", {"method": method})]


def send_email(note: Notification, delivery: Delivery) -> None:
    """Mail the notification to its recipient in their language: the title and the link (plain text
    and HTML, .ics invitation)."""
    with speaking(user_locale(note.user)):
        data = _payload(note, delivery)
        prefs = external_url("notifications.preferences")
        text = "\n\n".join([
            _("%(title)s.", title=data["title"]),
            _("Open Huizhen: %(link)s", link=data["link"]),
            _("Health information is shown only in Huizhen, never by email.") + "\n"
            + _("Choose which notifications you receive: %(link)s", link=prefs),
        ]) + "\n"
        sentence, open_link = _("%(title)s.", title=data["title"]), _("Open Huizhen")
        health, preferences = (_("Health information is shown only in Huizhen, never by email."),
                               _("Notification preferences"))
        html = (f"<p>{escape(sentence)}</p><p><a href=\"{escape(data['link'])}\">{escape(open_link)}</a></p>"
                f"<p><small>{escape(health)} <a href=\"{escape(prefs)}\">{escape(preferences)}</a></small></p>")
        subject = _("Huizhen: %(title)s", title=data["title"])
        attachments = invitation(note)
    msg = build_message(note.user.email, subject, text, html,
                        message_id=f"<{data['delivery']}@huizhen>", attachments=attachments)
    try:
        transmit(msg)
    except Exception as exc:
        raise DeliveryFailed(f"SMTP: {exc.__class__.__name__}: {exc}") from exc


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature: hex HMAC-SHA256 of "<timestamp>." + body with the shared secret."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def send_webhook(note: Notification, delivery: Delivery) -> None:
    """POST the notification as signed JSON to NOTIFY_WEBHOOK_URL; anything but 2xx is a failure."""
    config = current_app.config
    url = config.get("NOTIFY_WEBHOOK_URL") or ""
    if not url:
        raise DeliveryFailed("NOTIFY_WEBHOOK_URL is not set")
    with speaking(user_locale(note.user)):  # the title in the recipient's language
        body = json.dumps(_payload(note, delivery), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "Huizhen-Webhook/1",
        "X-Huizhen-Delivery": delivery_key(delivery), "X-Huizhen-Timestamp": timestamp,
        "X-Huizhen-Signature": "sha256=" + sign(config.get("NOTIFY_WEBHOOK_SECRET") or "", timestamp, body)})
    try:
        with urllib.request.urlopen(request, timeout=config["NOTIFY_WEBHOOK_TIMEOUT"]) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"webhook answered {exc.code}") from exc
    except Exception as exc:
        raise DeliveryFailed(f"webhook: {exc.__class__.__name__}: {exc}") from exc
    if not 200 <= status < 300:
        raise DeliveryFailed(f"webhook answered {status}")


SENDERS = {"email": send_email, "webhook": send_webhook}


def deliver(delivery_id: int, lease: datetime, now: datetime | None = None) -> str:
    """Send one claimed delivery and record the outcome (if this worker still holds the lease)."""
    delivery = db.session.get(Delivery, delivery_id)
    if delivery is None or delivery.status != "pending" or delivery.leased_until != lease:
        db.session.rollback()
        return "skipped"
    note = delivery.notification
    error = None
    try:
        SENDERS[delivery.channel](note, delivery)
    except DeliveryFailed as exc:
        error = str(exc)[:500]
    except Exception as exc:  # a bug or bad data: retried like a failure, logged with its trace
        log.exception("delivery %s (%s) failed", delivery.id, delivery.channel)
        error = f"{exc.__class__.__name__}: {exc}"[:500]
    finished = utcnow() if now is None else now
    mine = (Delivery.id == delivery_id, Delivery.leased_until == lease, Delivery.status == "pending")
    if error is None:
        values: dict[str, Any] = {"status": "sent", "sent_at": utcnow(), "leased_until": None, "last_error": None}
        outcome = "sent"
    elif delivery.attempts >= current_app.config["NOTIFY_MAX_ATTEMPTS"]:
        values, outcome = {"status": "failed", "leased_until": None, "last_error": error}, "failed"
        log.warning("delivery %s (%s) failed for good after %s attempts: %s", delivery.id, delivery.channel,
                    delivery.attempts, error)
    else:
        values = {"next_attempt_at": finished + backoff(delivery.attempts), "leased_until": None,
                  "last_error": error}
        outcome = "retry"
    db.session.execute(update(Delivery).where(*mine).values(**values),
                       execution_options={"synchronize_session": False})
    db.session.commit()
    return outcome


def run_once(now: datetime | None = None) -> dict[str, int]:
    """Claim one batch and deliver it; the count of each outcome."""
    counts: dict[str, int] = {}
    for delivery_id, lease in claim(now):
        outcome = deliver(delivery_id, lease, now)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def failed_deliveries(limit: int = 100) -> list[Delivery]:
    """Deliveries given up on, newest first (for coordinators)."""
    return list(db.session.scalars(select(Delivery).where(Delivery.status == "failed")
                                   .order_by(Delivery.id.desc()).limit(limit)))
