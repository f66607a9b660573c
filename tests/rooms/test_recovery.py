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
from tests.conftest import LiveServer, NodeProcess, cookie_header, free_port, http_session
from tests.rooms.test_events import NS, assert_error, join, send
from webapp import create_app
from webapp.auth import sessions
from webapp.extensions import db, socketio
from webapp.models import AuditEvent
from webapp.realtime import SERVER_KEY
from webapp.rooms import history

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


def test_head_gives_the_latest_stored_seq_to_joined_parties_only_and_is_rate_limited(make, sio, monkeypatch):
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    writer, reader = sio(rural), sio(specialist)
    monkeypatch.setattr(history, "HEAD_MIN_GAP", 0)
    early = reader.emit("head", {"ref": consult.ref}, namespace=NS, callback=True)
    assert_error(early, 422, "invalid_input")  # not joined on this connection
    join(writer, consult.ref)
    join(reader, consult.ref)
    assert reader.emit("head", {"ref": consult.ref}, namespace=NS, callback=True) == {"ok": True, "last_seq": 0}
    for i in range(3):
        sent = send(writer, consult.ref, f"head-{i:03d}", f"m{i}")
        assert sent["ok"], sent
    monkeypatch.setattr(history, "HEAD_MIN_GAP", 3600)  # asked again too soon
    assert_error(reader.emit("head", {"ref": consult.ref}, namespace=NS, callback=True), 429, "rate_limited")
    monkeypatch.setattr(history, "HEAD_MIN_GAP", 0)
    audited = db.session.scalar(select(func.count()).select_from(AuditEvent))
    assert reader.emit("head", {"ref": consult.ref}, namespace=NS, callback=True) == {"ok": True, "last_seq": 3}
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == audited  # no audit row
    stranger = sio(make.specialist())
    assert_error(stranger.emit("head", {"ref": consult.ref}, namespace=NS, callback=True), 404, "not_found")


# --- two nodes sharing a Redis of the test's own ------------------------------------------------------

RESYNC_SECONDS = TestingConfig.RESYNC_SECONDS
BOUND = RESYNC_SECONDS + 5  # the check interval, plus a loaded shared machine's slack for the backfill


class ResyncReader:
    """A reader running room.js's protocol: live 'message' events, and every RESYNC_SECONDS a
    'head' check that backfills (page by page) whatever is stored and not shown yet."""

    def __init__(self, client: sio_client.Client, ref: str) -> None:
        self.client, self.ref = client, ref
        self.shown: dict[int, float] = {}  # seq -> when it was first shown (monotonic)
        self.live: set[int] = set()        # seqs that arrived as live events
        self.lock = threading.Lock()
        self.stop = threading.Event()
        client.on("message", self._on_message, namespace=NS)
        ack = client.call("join", {"ref": ref, "after_seq": 0}, namespace=NS, timeout=15)
        assert ack["ok"], ack
        self._take(ack["messages"])
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _take(self, messages: list[dict[str, Any]], live: bool = False) -> None:
        now = time.monotonic()
        with self.lock:
            for m in messages:
                self.shown.setdefault(m["seq"], now)
                if live:
                    self.live.add(m["seq"])

    def last_contiguous(self) -> int:
        with self.lock:
            seq = 0
            while seq + 1 in self.shown:
                seq += 1
            return seq

    def _on_message(self, message: dict[str, Any]) -> None:
        self._take([message], live=True)

    def _catch_up(self, latest: int) -> None:
        while self.last_contiguous() < latest:
            page = self.client.call("backfill", {"ref": self.ref, "after_seq": self.last_contiguous()},
                                    namespace=NS, timeout=15)
            assert page["ok"], page
            self._take(page["messages"])
            if not page["messages"]:
                return

    def _loop(self) -> None:
        while not self.stop.wait(RESYNC_SECONDS):
            try:
                head = self.client.call("head", {"ref": self.ref}, namespace=NS, timeout=10)
            except sio_client.exceptions.TimeoutError:
                continue  # as room.js: the next check asks again
            if head.get("ok"):
                self._catch_up(head["last_seq"])

    def wait_shown(self, seqs: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(s in self.shown for s in seqs):
                    return
            time.sleep(0.1)
        with self.lock:
            missing = [s for s in seqs if s not in self.shown]
        raise AssertionError(f"not shown within {timeout:.0f} s: {missing}")


def connect_as(node: NodeProcess, user) -> sio_client.Client:
    client = sio_client.Client(reconnection=False)
    client.connect(node.url, namespaces=[NS], transports=["websocket"],
                   headers={"Cookie": cookie_header(http_session(node.url, user.email))}, wait_timeout=10)
    return client


def test_every_stored_message_reaches_a_reader_on_another_node_while_redis_is_down_and_after(
        make, own_redis, two_nodes):
    writer_node, reader_node = two_nodes
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    writer = connect_as(writer_node, rural)
    reader_client = connect_as(reader_node, specialist)
    try:
        assert writer.call("join", {"ref": consult.ref}, namespace=NS, timeout=15)["ok"]
        reader = ResyncReader(reader_client, consult.ref)
        stored: dict[int, float] = {}

        def write(tag: str) -> int:
            ack = writer.call("send", {"ref": consult.ref, "client_id": f"resync-{tag}", "body": tag},
                              namespace=NS, timeout=15)
            assert ack["ok"], ack
            stored[ack["message"]["seq"]] = time.monotonic()
            return ack["message"]["seq"]

        first = write("before-outage")
        reader.wait_shown([first], BOUND)
        assert first in reader.live  # Redis carried it across nodes

        own_redis.stop()
        during = []
        outage_ends = time.monotonic() + 15
        while time.monotonic() < outage_ends:  # the writer keeps writing through ~15 s of outage
            during.append(write(f"outage-{len(during):02d}"))
            time.sleep(1.5)
        reader.wait_shown(during, BOUND)  # Redis is still down: shown from the database
        assert own_redis.proc is None
        assert "the message queue did not take" in writer_node.log()  # the failed publish was noticed

        own_redis.start()
        after = [write(f"after-{i}") for i in range(3)]
        reader.wait_shown(after, BOUND)
        reader.stop.set()

        late = {seq: reader.shown[seq] - at for seq, at in stored.items()}
        print(f"\nresync lateness (s) with RESYNC_SECONDS={RESYNC_SECONDS}: during the outage max "
              f"{max(late[s] for s in during):.2f} mean {sum(late[s] for s in during) / len(during):.2f}; "
              f"after Redis returned max {max(late[s] for s in after):.2f}; "
              f"live during the outage: {len([s for s in during if s in reader.live])}/{len(during)}")
        assert max(late.values()) <= BOUND, late
        backfilled = [seq for seq in during if seq not in reader.live]
        assert backfilled, "the outage did not hide any live event: the test proved nothing"
        full = reader_client.call("backfill", {"ref": consult.ref, "after_seq": 0}, namespace=NS, timeout=15)
        assert sorted(reader.shown) == [m["seq"] for m in full["messages"]] == list(range(1, len(stored) + 1))
    finally:
        for client in (writer, reader_client):
            if client.connected:
                client.disconnect()


def test_head_after_logout_is_refused_though_it_skips_loading_the_user(app, make, sio, monkeypatch):
    monkeypatch.setattr(history, "HEAD_MIN_GAP", 0)
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    browser = app.test_client()
    reader = sio(rural, flask_client=browser)
    join(reader, consult.ref)
    assert send(reader, consult.ref, "head-logout-1", "m1")["ok"]
    assert reader.emit("head", {"ref": consult.ref}, namespace=NS, callback=True) == {"ok": True, "last_seq": 1}
    # Signed out on a node whose disconnect order never arrived (Redis down): the session is ended
    # in the database only, the socket stays open, and the check still refuses it.
    sessions.end_all(rural, "logout")
    db.session.commit()
    assert reader.is_connected(NS)
    ack = reader.emit("head", {"ref": consult.ref}, namespace=NS, callback=True)
    assert_error(ack, 422)
    assert "session" in ack["message"].lower()
