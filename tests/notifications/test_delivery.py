"""Delivery by email (a real aiosmtpd server) and webhook (a local HTTP server): content, signature, backoff."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

from tests.conftest import login
from tests.notifications.conftest import notifications_of
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import Delivery, utcnow
from webapp.notifications import delivery

CLINICAL = ("Chest pain", "exertional chest pain", "ST depression", "Angiography or medical management",
            "Patient transferred to the county hospital")


def test_email_reaches_the_recipient_with_the_link_and_no_clinical_text(app, make, smtp_server, monkeypatch):
    monkeypatch.setitem(app.config, "PUBLIC_URL", "https://huizhen.example.org")
    rural, spec = make.rural(), make.specialist(email="zhang@hospital.example")
    consult = make.scheduled(rural, spec)
    consults.cancel(rural, consult.ref, "Patient transferred to the county hospital")
    assert delivery.run_once() == {"sent": 4}  # offered and cancelled to him, accepted and booked to rural
    [offered, cancelled] = smtp_server.wait_for("zhang@hospital.example", 2)
    raw = cancelled.as_string()
    assert cancelled["Subject"] == f"Huizhen: {rural.full_name} cancelled a consultation"
    assert f"https://huizhen.example.org/consults/{consult.ref}" in raw
    for text in CLINICAL:
        assert text not in offered.as_string() and text not in raw, text
    assert cancelled.get_body(preferencelist=("html",)) is not None
    assert all(d.status == "sent" for n in notifications_of(spec) for d in n.deliveries)


def test_webhook_is_a_signed_json_post_without_clinical_content(app, make, webhook):
    rural, spec = make.rural(), make.specialist()
    consult = make.requested(rural)
    db.session.execute(Delivery.__table__.delete().where(Delivery.channel == "email"))
    db.session.commit()
    assert delivery.run_once() == {"sent": 1}
    [(headers, body, _)] = webhook.received
    expected = hmac.new(b"test-webhook-secret", headers["x-huizhen-timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert headers["x-huizhen-signature"] == f"sha256={expected}"
    data = json.loads(body)
    assert data["kind"] == "consult.offered" and data["recipient"]["email"] == spec.email
    assert data["link"].endswith(f"/consults/{consult.ref}")
    assert data["delivery"] == headers["x-huizhen-delivery"]
    for text in CLINICAL:
        assert text not in body.decode(), text


def test_a_failing_webhook_is_retried_with_backoff_then_marked_failed_for_coordinators(app, make, webhook,
                                                                                       monkeypatch):
    monkeypatch.setitem(app.config, "NOTIFY_MAX_ATTEMPTS", 4)
    monkeypatch.setitem(app.config, "NOTIFY_RETRY_BASE_SECONDS", 60)
    webhook.status = 503
    rural, spec, coord = make.rural(), make.specialist(), make.coordinator()
    make.requested(rural)
    db.session.execute(Delivery.__table__.delete().where(Delivery.channel == "email"))
    db.session.commit()
    now = utcnow()
    waits = []
    for attempt in range(1, 5):
        assert delivery.run_once(now) == {("failed" if attempt == 4 else "retry"): 1}
        assert delivery.run_once(now) == {}  # not due again before its backoff
        d = db.session.scalars(db.select(Delivery)).one()
        assert d.attempts == attempt and d.last_error == "webhook answered 503"
        if attempt < 4:
            waits.append((d.next_attempt_at - now).total_seconds())
            now = d.next_attempt_at
    assert waits == [60, 120, 240]
    assert d.status == "failed" and len(webhook.received) == 4
    client = app.test_client()
    login(client, coord)
    page = client.get("/notifications/failed").get_data(as_text=True)
    assert spec.email in page and "webhook answered 503" in page
    login(client := app.test_client(), spec)
    assert client.get("/notifications/failed").status_code in (403, 404)


def test_an_unreachable_smtp_server_is_retried(app, make, monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setitem(app.config, "SMTP_URL", f"smtp://127.0.0.1:{free_port()}")
    rural, _ = make.rural(), make.specialist()
    make.requested(rural)
    assert delivery.run_once() == {"retry": 1}
    d = db.session.scalars(db.select(Delivery)).one()
    assert d.status == "pending" and d.last_error.startswith("SMTP:")
    assert d.next_attempt_at > utcnow() + timedelta(seconds=20)
