"""Outgoing mail over SMTP (stdlib smtplib); without SMTP_URL, mails are written to the log.

``SMTP_URL`` is ``smtp://[user:password@]host[:port]`` (add ``?starttls=1`` to upgrade the
connection) or ``smtps://…`` for TLS from the start; ``MAIL_FROM`` is the sender. Callers send
after their commit: a failure is logged and reported as False, never raised.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from flask import current_app, has_request_context, url_for

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 10


def external_url(endpoint: str, **values: Any) -> str:
    """An absolute link for a mail: under PUBLIC_URL when set (never a forged Host header)."""
    base = (current_app.config.get("PUBLIC_URL") or "").rstrip("/")
    if base:
        with current_app.test_request_context("/", base_url=base):
            return url_for(endpoint, _external=True, **values)
    if has_request_context():
        return url_for(endpoint, _external=True, **values)
    with current_app.test_request_context("/", base_url="http://localhost:5000"):
        return url_for(endpoint, _external=True, **values)


@dataclass(frozen=True)
class Attachment:
    """A file attached to a mail: name, bytes, MIME type and extra Content-Type parameters."""

    filename: str
    data: bytes
    mimetype: str = "application/octet-stream"
    params: dict[str, str] = field(default_factory=dict)


def build_message(to: str, subject: str, text: str, html: str | None = None, *,
                  message_id: str | None = None, attachments: Sequence[Attachment] = ()) -> EmailMessage:
    """The email as it will be sent (plain text, with an HTML alternative when given, and attachments)."""
    msg = EmailMessage()
    msg["From"] = current_app.config["MAIL_FROM"]
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id or make_msgid(domain="huizhen")
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for item in attachments:
        maintype, _, subtype = item.mimetype.partition("/")
        if maintype == "text":  # readable in the raw message (e.g. an .ics), UTF-8
            msg.add_attachment(item.data.decode(), subtype=subtype, filename=item.filename,
                               params=dict(item.params))
        else:
            msg.add_attachment(item.data, maintype=maintype, subtype=subtype, filename=item.filename,
                               params=dict(item.params))
    return msg


def send_mail(to: str, subject: str, text: str, html: str | None = None, *,
              attachments: Sequence[Attachment] = ()) -> bool:
    """Send one email now; True if the SMTP server took it (or, without SMTP_URL, it was logged)."""
    try:
        msg = build_message(to, subject, text, html, attachments=attachments)
    except Exception:
        log.exception("could not build the mail %r to %s", subject, to)
        return False
    try:
        transmit(msg)
        return True
    except Exception:
        log.exception("could not send the mail %r to %s (SMTP_URL)", subject, to)
        return False


def transmit(msg: EmailMessage) -> None:
    """Hand a built message to SMTP_URL (or write it to the log without one); raises on failure."""
    url = current_app.config.get("SMTP_URL") or ""
    if not url:
        log.info("SMTP_URL is not set; mail not sent, here it is:\n%s", msg.as_string())
        return
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("SMTP_URL must look like smtp://host:port or smtps://host:port")
    options = parse_qs(parts.query)
    if parts.scheme == "smtps":
        conn: smtplib.SMTP = smtplib.SMTP_SSL(parts.hostname, parts.port or 465, timeout=TIMEOUT_SECONDS,
                                              context=ssl.create_default_context())
    else:
        conn = smtplib.SMTP(parts.hostname, parts.port or 25, timeout=TIMEOUT_SECONDS)
    with conn:
        if parts.scheme == "smtp" and options.get("starttls", ["0"])[0] in ("1", "true", "yes"):
            conn.starttls(context=ssl.create_default_context())
        if parts.username:
            conn.login(unquote(parts.username), unquote(parts.password or ""))
        conn.send_message(msg)


def send_mail_later(to: str, subject: str, text: str, html: str | None = None) -> None:
    """Send in a background task: the caller's response time says nothing about the mail.

    Used where the timing of a response must not reveal whether an account exists (forgotten
    password, registration with a taken address).
    """
    from .realtime import SERVER_KEY

    app = current_app._get_current_object()

    def deliver() -> None:
        with app.app_context():
            send_mail(to, subject, text, html)

    app.extensions[SERVER_KEY].start_background_task(deliver)
