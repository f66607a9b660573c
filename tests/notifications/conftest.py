"""Fixtures for the notification tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from webapp.extensions import db
from webapp.models import Delivery, Notification


class CommitFailed(RuntimeError):
    """The database refused the commit (raised by the failing_commit fixture)."""


@pytest.fixture
def failing_commit() -> Iterator:
    """A context manager: the next COMMIT inside it fails, as a database failure would."""
    import contextlib

    @contextlib.contextmanager
    def failing():
        def refuse(session: Session) -> None:
            raise CommitFailed("commit refused by the test")

        event.listen(Session, "before_commit", refuse)
        try:
            yield
        finally:
            event.remove(Session, "before_commit", refuse)
            db.session.rollback()

    return failing


def notifications_of(user, kind: str | None = None) -> list[Notification]:
    """The stored notifications of a user (of one kind), oldest first."""
    query = select(Notification).where(Notification.user_id == user.id).order_by(Notification.id)
    if kind is not None:
        query = query.where(Notification.kind == kind)
    return list(db.session.scalars(query))


def counts() -> tuple[int, int]:
    """How many notifications and deliveries are stored."""
    return (db.session.scalar(select(func.count(Notification.id))),
            db.session.scalar(select(func.count(Delivery.id))))


class Hook:
    """A local webhook receiver: records each POST (headers, body) and answers with `status`."""

    def __init__(self, status: int = 200) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.status = status
        self.received: list[tuple[dict, bytes, float]] = []
        self.hold: str | None = None  # a delivery key whose request is held unanswered (see the crash test)
        self.held = threading.Event()
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                import time

                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if hook.hold is not None and headers.get("x-huizhen-delivery") == hook.hold:
                    hook.hold = None
                    hook.held.set()
                    hook.release.wait(30)
                    return  # never answered: not accepted (the sender is killed meanwhile)
                hook.received.append((headers, body, time.monotonic()))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def keys(self) -> list[str]:
        return [h["x-huizhen-delivery"] for h, _, _ in self.received]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def webhook(app, monkeypatch) -> Iterator[Hook]:
    """A local HTTP server the app's webhook deliveries go to (NOTIFY_WEBHOOK_URL, with a secret)."""
    hook = Hook()
    monkeypatch.setitem(app.config, "NOTIFY_WEBHOOK_URL", hook.url)
    monkeypatch.setitem(app.config, "NOTIFY_WEBHOOK_SECRET", "test-webhook-secret")
    yield hook
    hook.stop()
