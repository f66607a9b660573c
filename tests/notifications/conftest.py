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


ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def start_worker(database_url: str, log_path, **settings: str):
    """Start the delivery worker as its own process (python -m webapp.notifications.worker)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "DATABASE_URL": database_url, "HUIZHEN_ENV": "development", "REDIS_URL": "",
           "NOTIFY_POLL_SECONDS": "0.2", **settings}
    env.pop("TEST_DATABASE_URL", None)
    log = open(log_path, "ab")  # noqa: SIM115 (closed with the process by the caller's stop)
    proc = subprocess.Popen([sys.executable, "-m", "webapp.notifications.worker"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    proc.log_file = log  # type: ignore[attr-defined]
    return proc


def stop_worker(proc) -> None:
    """End a worker started by start_worker (SIGTERM, then SIGKILL) and close its log."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.log_file.close()


def wait_until(condition, timeout: float = 60, what: str = "condition") -> None:
    """Poll condition() until it is true (generous: the machine may be loaded)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def mailbox() -> Iterator:
    """A real aiosmtpd server (not tied to the app's config) for worker processes: (MailBox, SMTP_URL)."""
    from aiosmtpd.controller import Controller

    from tests.conftest import MailBox, free_port

    box = MailBox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield box, f"smtp://127.0.0.1:{controller.port}"
    controller.stop()
