"""webapp/mail.py against a real SMTP server (aiosmtpd on a loopback port)."""

from __future__ import annotations

from tests.conftest import free_port, mail_text
from webapp.mail import send_mail


def test_send_mail_delivers_text_and_html_alternative(app, smtp_server):
    assert send_mail("doctor@test.example", "Subject 测试", "Plain body 你好", "<p>HTML body</p>") is True
    [message] = smtp_server.wait_for("doctor@test.example")
    assert message["Subject"] == "Subject 测试"
    assert message["From"] == app.config["MAIL_FROM"]
    assert mail_text(message).strip() == "Plain body 你好"
    assert message.get_body(preferencelist=("html",)).get_content().strip() == "<p>HTML body</p>"


def test_an_smtp_failure_is_logged_and_reported_never_raised(app, monkeypatch, caplog):
    monkeypatch.setitem(app.config, "SMTP_URL", f"smtp://127.0.0.1:{free_port()}")  # nobody listens
    assert send_mail("doctor@test.example", "Hello", "Body") is False
    assert "could not send the mail" in caplog.text
    monkeypatch.setitem(app.config, "SMTP_URL", "ftp://not-smtp")
    assert send_mail("doctor@test.example", "Hello", "Body") is False
