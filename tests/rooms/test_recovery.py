"""Connect and resync recover by themselves: real servers, real python-socketio clients.

- A namespace connect while the database is down is answered with CONNECT_ERROR 'unavailable'
  (retryable), an anonymous one with 'unauthorized': socket.io-client never waits for ever.
- The resync check: 'head' gives the room's latest seq from the database (not the queue), so a
  reader whose live events were lost (Redis down) backfills what is stored within the interval.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import socketio as sio_client
from sqlalchemy import func, select

from config import TestingConfig
from tests.conftest import LiveServer, cookie_header, free_port, http_session
from tests.rooms.test_events import NS, assert_error, join, send
from webapp import create_app
from webapp.extensions import db, socketio
from webapp.models import AuditEvent
from webapp.realtime import SERVER_KEY

NAMESPACES = ("/room", "/notes", "/call")

pytestmark = pytest.mark.usefixtures("generous_chat")


def refusal(url: str, namespace: str, cookie: str | None) -> dict[str, Any] | None:
    """Connect one namespace; the CONNECT_ERROR payload the server answered with (None: no answer)."""
    client = sio_client.Client(reconnection=False)
    answered = threading.Event()
    seen: dict[str, Any] = {}

    def on_error(data: Any = None) -> None:
        seen["data"] = data
        answered.set()

    client.on("connect_error", on_error, namespace=namespace)
    try:
        client.connect(url, namespaces=[namespace], transports=["websocket"],
                       headers={"Cookie": cookie} if cookie else {}, wait_timeout=5)
    except sio_client.exceptions.ConnectionError:
        pass
    finally:
        if client.connected:
            client.disconnect()
    return seen.get("data") if answered.is_set() else None


@pytest.fixture
def dead_database_server(app, tmp_path):
    """The app served with its database at a closed port: every query fails as in an outage."""
    dead = create_app(TestingConfig, {
        "SQLALCHEMY_DATABASE_URI": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/huizhen_resync",
        "UPLOAD_DIR": str(tmp_path / "uploads"),
    })
    server = LiveServer(dead)
    dead.config["ALLOWED_ORIGINS"] = [*dead.config["ALLOWED_ORIGINS"], server.url]
    yield server.start()
    server.stop()
    socketio.server = app.extensions[SERVER_KEY]  # create_app() pointed the singleton at `dead`
    with dead.app_context():
        db.engine.dispose()


def test_a_connect_while_the_database_is_down_gets_a_retryable_connect_error(make, live_server,
                                                                              dead_database_server):
    user = make.rural()
    session = http_session(live_server.url, user.email)  # signed in while the database was up
    for namespace in NAMESPACES:
        data = refusal(dead_database_server.url, namespace, cookie_header(session))
        assert data is not None, f"{namespace}: the server sent no CONNECT_ERROR (the client would wait for ever)"
        assert data["message"] == "unavailable", data
        assert data["data"]["retry_after_ms"] > 0


def test_an_anonymous_connect_is_refused_as_unauthorized(live_server):
    for namespace in NAMESPACES:
        data = refusal(live_server.url, namespace, None)
        assert data == {"message": "unauthorized"}, f"{namespace}: {data}"


def test_head_gives_the_latest_stored_seq_to_joined_parties_only_and_is_rate_limited(make, sio):
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    writer, reader = sio(rural), sio(specialist)
    early = reader.emit("head", {"ref": consult.ref}, namespace=NS, callback=True)
    assert_error(early, 422, "invalid_input")  # not joined on this connection
    join(writer, consult.ref)
    join(reader, consult.ref)
    assert reader.emit("head", {"ref": consult.ref}, namespace=NS, callback=True) == {"ok": True, "last_seq": 0}
    for i in range(3):
        sent = send(writer, consult.ref, f"head-{i:03d}", f"m{i}")
        assert sent["ok"], sent
    assert_error(reader.emit("head", {"ref": consult.ref}, namespace=NS, callback=True), 429, "rate_limited")
    time.sleep(0.6)
    audited = db.session.scalar(select(func.count()).select_from(AuditEvent))
    assert reader.emit("head", {"ref": consult.ref}, namespace=NS, callback=True) == {"ok": True, "last_seq": 3}
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == audited  # no audit row
    stranger = sio(make.specialist())
    assert_error(stranger.emit("head", {"ref": consult.ref}, namespace=NS, callback=True), 404, "not_found")
