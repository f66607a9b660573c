"""Consult-room chat over real websockets: Huizhen on a loopback port, python-socketio clients.

The two parties log in through the real login form and talk over the /room namespace. The tests
check what the issue promises: ordered delivery with acks carrying stored ids, idempotent retries,
backfill after a dropped connection and after a server restart (a freshly built app on the same
database), refusal of a non-party, and chat attachments uploaded over HTTP and announced over the
socket.
"""

from __future__ import annotations

import io
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import socketio as sio_client
from PIL import Image
from sqlalchemy import select

from config import TestingConfig
from tests.conftest import LiveServer, cookie_header, http_session
from webapp import create_app
from webapp.extensions import db, socketio
from webapp.models import AuditEvent, Message
from webapp.realtime import SERVER_KEY
from webapp.rooms.events import presence_of

NS = "/room"
TIMEOUT = 15


pytestmark = pytest.mark.usefixtures("generous_chat")


class Peer:
    """One python-socketio connection of one user, recording what the server pushes."""

    def __init__(self, client: sio_client.Client, user_id: int) -> None:
        self.client = client
        self.user_id = user_id
        self.messages: list[dict[str, Any]] = []
        self.other: list[tuple[str, Any]] = []
        self.cond = threading.Condition()
        self.disconnected = threading.Event()
        client.on("message", self._on_message, namespace=NS)
        for name in ("presence", "typing", "read"):
            client.on(name, self._recorder(name), namespace=NS)
        client.on("disconnect", lambda *args: self.disconnected.set(), namespace=NS)

    def _on_message(self, data: dict[str, Any]) -> None:
        with self.cond:
            self.messages.append(data)
            self.cond.notify_all()

    def _recorder(self, name: str) -> Callable[[Any], None]:
        def record(data: Any) -> None:
            with self.cond:
                self.other.append((name, data))
                self.cond.notify_all()
        return record

    def call(self, event: str, data: Any) -> dict[str, Any]:
        return self.client.call(event, data, namespace=NS, timeout=TIMEOUT)

    def join(self, ref: str, after_seq: int = 0) -> dict[str, Any]:
        ack = self.call("join", {"ref": ref, "after_seq": after_seq})
        assert ack["ok"] is True, ack
        return ack

    def send(self, ref: str, client_id: str, body: str = "", **extra: Any) -> dict[str, Any]:
        return self.call("send", {"ref": ref, "client_id": client_id, "body": body, **extra})

    def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout=TIMEOUT), f"timed out waiting for {what}"

    def wait_for_message(self, client_id: str) -> dict[str, Any]:
        self.wait_until(lambda: any(m["client_id"] == client_id for m in self.messages), client_id)
        return next(m for m in self.messages if m["client_id"] == client_id)

    def events_named(self, name: str) -> list[Any]:
        with self.cond:
            return [data for n, data in self.other if n == name]

    def drop(self) -> None:
        """Cut the TCP connection under the websocket, as a lost network would (no close packet)."""
        self.client.eio.ws.sock.shutdown(socket.SHUT_RDWR)
        assert self.disconnected.wait(TIMEOUT), "the client did not notice the dropped connection"


def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for a condition that no event announces."""
    deadline = threading.Event()
    for _ in range(TIMEOUT * 50):
        if predicate():
            return
        deadline.wait(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def connect(base_url: str, session: requests.Session) -> sio_client.Client:
    client = sio_client.Client(reconnection=False)
    client.connect(base_url, namespaces=[NS], transports=["websocket"],
                   headers={"Cookie": cookie_header(session)}, wait_timeout=10)
    client.http_session = session  # type: ignore[attr-defined]
    return client


@pytest.fixture
def parties(make):
    rural = make.rural(name="Dr Ma Xiaoli")
    specialist = make.specialist(name="Dr Zhou Wei")
    consult = make.scheduled(rural, specialist)
    return rural, specialist, consult


@pytest.fixture
def peers(parties, real_client) -> Iterator[tuple[Peer, Peer, str]]:
    """Both parties connected over websockets and joined to the consult's room."""
    rural, specialist, consult = parties
    ref = consult.ref
    a = Peer(real_client(rural), rural.id)
    b = Peer(real_client(specialist), specialist.id)
    a.join(ref)
    b.join(ref)
    yield a, b, ref


def stored_messages(consult_ref: str) -> list[tuple[int, int, str]]:
    """(id, seq, client_id) of the consult's messages as the database holds them."""
    from webapp.models import Consult

    db.session.rollback()  # a fresh snapshot: the server committed on its own connections
    consult_id = db.session.scalar(select(Consult.id).where(Consult.ref == consult_ref))
    return [tuple(r) for r in db.session.execute(
        select(Message.id, Message.seq, Message.client_id).where(Message.consult_id == consult_id)
        .order_by(Message.seq)).all()]


def png_bytes(size=(64, 48), color=(30, 120, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


# --- order and acks ------------------------------------------------------------------------------


def test_interleaved_messages_arrive_in_order_with_acks_carrying_stored_ids(peers, parties):
    a, b, ref = peers
    acks = []
    for i in range(12):
        sender = a if i % 3 != 2 else b  # both sides, unevenly interleaved
        ack = sender.send(ref, f"order-{i:04d}", f"message {i} from {sender.user_id}")
        assert ack["ok"] is True and ack["duplicate"] is False, ack
        acks.append(ack["message"])
    assert [m["seq"] for m in acks] == list(range(1, 13))

    for peer in (a, b):
        peer.wait_until(lambda p=peer: len(p.messages) >= 12, "12 messages")
        assert [m["seq"] for m in peer.messages] == list(range(1, 13))
        assert [m["id"] for m in peer.messages] == [m["id"] for m in acks]
        assert [m["body"] for m in peer.messages] == [f"message {i} from {m['sender_id']}"
                                                      for i, m in enumerate(acks)]
    # the acked ids are the stored rows, in the same order
    assert stored_messages(ref) == [(m["id"], m["seq"], m["client_id"]) for m in acks]


def test_concurrent_senders_get_gap_free_sequences_and_every_message_once(peers):
    a, b, ref = peers
    per_side = 15
    acks: dict[str, list[dict]] = {"a": [], "b": []}
    errors: list[Any] = []

    def burst(peer: Peer, tag: str) -> None:
        for i in range(per_side):
            ack = peer.send(ref, f"{tag}-burst-{i:03d}", f"{tag}{i}")
            if not ack.get("ok"):
                errors.append(ack)
            else:
                acks[tag].append(ack["message"])

    threads = [threading.Thread(target=burst, args=(a, "a")), threading.Thread(target=burst, args=(b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    total = 2 * per_side
    all_seqs = sorted(m["seq"] for side in acks.values() for m in side)
    assert all_seqs == list(range(1, total + 1))
    for side in acks.values():  # each sender's messages keep the order they were sent in
        assert [m["seq"] for m in side] == sorted(m["seq"] for m in side)
    for peer in (a, b):
        peer.wait_until(lambda p=peer: len(p.messages) >= total, f"{total} messages")
        received = [m["seq"] for m in peer.messages]
        assert sorted(received) == list(range(1, total + 1))  # every message once, none twice
        # a client that orders by seq and backfills gaps from the database sees the same history
        backfilled = peer.call("backfill", {"ref": ref, "after_seq": 0})["messages"]
        assert [m["seq"] for m in backfilled] == list(range(1, total + 1))
        assert {m["id"] for m in backfilled} == {m["id"] for m in peer.messages}


# --- idempotency ---------------------------------------------------------------------------------


def test_a_retried_send_is_stored_and_delivered_once(peers):
    a, b, ref = peers
    first = a.send(ref, "retry-lost-ack-1", "Troponin 0.8 ng/mL")
    retry = a.send(ref, "retry-lost-ack-1", "Troponin 0.8 ng/mL")
    assert first["ok"] and retry["ok"]
    assert (first["duplicate"], retry["duplicate"]) == (False, True)
    assert retry["message"]["id"] == first["message"]["id"]
    assert retry["message"]["seq"] == first["message"]["seq"] == 1
    # a marker sent after the retry: once it has arrived, anything the retry caused has too
    a.send(ref, "after-retry-1", "marker")
    b.wait_for_message("after-retry-1")
    assert [m["client_id"] for m in b.messages] == ["retry-lost-ack-1", "after-retry-1"]
    assert [row[2] for row in stored_messages(ref)] == ["retry-lost-ack-1", "after-retry-1"]


def test_a_retry_on_a_new_connection_after_a_drop_is_not_duplicated(peers, parties, live_server):
    """The ack was lost with the connection: the client resends the same client id after reconnecting."""
    a, b, ref = peers
    first = a.send(ref, "lost-with-conn-1", "sent just before the tunnel")
    a.drop()
    a2 = Peer(connect(live_server.url, a.client.http_session), a.user_id)
    try:
        a2.join(ref, after_seq=0)
        again = a2.send(ref, "lost-with-conn-1", "sent just before the tunnel")
        assert again["ok"] and again["duplicate"] is True and again["message"]["id"] == first["message"]["id"]
        a2.send(ref, "after-reconnect", "marker")
        b.wait_for_message("after-reconnect")
        assert [m["client_id"] for m in b.messages] == ["lost-with-conn-1", "after-reconnect"]
    finally:
        a2.client.disconnect()


# --- backfill after a dropped connection ---------------------------------------------------------


def test_backfill_after_a_dropped_connection_while_the_other_party_kept_sending(peers, parties, live_server):
    a, b, ref = peers
    rural, specialist, _ = parties
    for i in range(3):
        a.send(ref, f"before-drop-{i}", f"before {i}")
    b.wait_until(lambda: len(b.messages) >= 3, "3 messages before the drop")
    last_seen = max(m["seq"] for m in b.messages)
    assert last_seen == 3

    b.drop()
    # the server noticed: the rural doctor sees the specialist leave
    a.wait_until(lambda: any([p["user_id"] for p in e["people"]] == [rural.id] for e in a.events_named("presence")),
                 "presence without the specialist")
    missed = []
    for i in range(7):
        ack = a.send(ref, f"while-away-{i}", f"while away {i}")
        assert ack["ok"] is True, ack
        missed.append(ack["message"])
    assert len(b.messages) == 3  # nothing reached the dropped connection

    b2 = Peer(connect(live_server.url, b.client.http_session), specialist.id)
    try:
        ack = b2.join(ref, after_seq=last_seen)
        backlog = ack["messages"]
        assert [m["seq"] for m in backlog] == [4, 5, 6, 7, 8, 9, 10]
        assert [m["id"] for m in backlog] == [m["id"] for m in missed]
        assert [m["body"] for m in backlog] == [f"while away {i}" for i in range(7)]
        assert {p["user_id"] for p in ack["people"]} == {rural.id, specialist.id}
        # live delivery resumes on the new connection, exactly once
        a.send(ref, "after-return", "welcome back")
        b2.wait_for_message("after-return")
        history = [m["seq"] for m in b.messages] + [m["seq"] for m in backlog] + [m["seq"] for m in b2.messages]
        assert history == list(range(1, 12))  # nothing lost, nothing twice, in order
        # the backfill event gives the same answer as the join did
        again = b2.call("backfill", {"ref": ref, "after_seq": last_seen})
        assert [m["id"] for m in again["messages"]] == [m["id"] for m in backlog] + [b2.messages[0]["id"]]
    finally:
        b2.client.disconnect()


# --- backfill across a server restart ------------------------------------------------------------


def test_backfill_across_a_server_restart_on_a_freshly_built_app(app, peers, parties, live_server, database_url):
    a, b, ref = peers
    rural, specialist, consult = parties
    consult_id = consult.id
    sent: list[dict] = []
    for i in range(4):
        sender = a if i % 2 == 0 else b
        sent.append(sender.send(ref, f"before-restart-{i}", f"before restart {i}")["message"])
    for peer in (a, b):
        peer.wait_until(lambda p=peer: len(p.messages) >= 4, "4 messages before the restart")
    b_last = max(m["seq"] for m in b.messages)

    # the server goes away: it stops listening and its open connections die with the process.
    # (Cut from the clients' side: python-engineio's server-side Socket.close(wait=True) can wait
    # forever when the client closes at the same moment, a race in the library, not in Huizhen.)
    live_server.stop()
    for peer in (a, b):
        peer.drop()
    # presence is per process (per app); the old one notices both connections end
    eventually(lambda: presence_of(app).people(consult_id) == [], "the old server to see both connections end")

    # a new process: an app built from scratch on the same database and upload directory
    fresh = create_app(TestingConfig, {
        "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
        "UPLOAD_DIR": app.config["UPLOAD_DIR"],
        "LOGIN_RATE_LIMIT": "1000 per minute",
        "CHAT_MESSAGES_PER_SECOND": 1000,
    })
    assert fresh.extensions[SERVER_KEY] is not app.extensions[SERVER_KEY]
    server = LiveServer(fresh)
    fresh.config["ALLOWED_ORIGINS"] = [*fresh.config["ALLOWED_ORIGINS"], server.url]
    server.start()
    clients: list[sio_client.Client] = []
    try:
        # the rural doctor comes back first (the old session cookie still works) and keeps writing
        a2 = Peer(connect(server.url, a.client.http_session), rural.id)
        clients.append(a2.client)
        ack = a2.join(ref, after_seq=max(m["seq"] for m in a.messages))
        assert ack["messages"] == []  # the rural doctor had seen everything
        assert [p["user_id"] for p in ack["people"]] == [rural.id]  # no ghosts of the old connections
        for i in range(3):
            ack = a2.send(ref, f"after-restart-{i}", f"after restart {i}")
            assert ack["ok"] is True, ack
            sent.append(ack["message"])
        # a retry of a message stored before the restart is still recognised
        retry = a2.send(ref, "before-restart-0", "before restart 0")
        assert retry["duplicate"] is True and retry["message"]["id"] == sent[0]["id"]

        b2 = Peer(connect(server.url, b.client.http_session), specialist.id)
        clients.append(b2.client)
        joined = b2.join(ref, after_seq=b_last)
        backlog = joined["messages"]
        assert [m["seq"] for m in backlog] == [5, 6, 7]
        assert {p["user_id"] for p in joined["people"]} == {rural.id, specialist.id}
        a2.send(ref, "after-restart-live", "live again")
        b2.wait_for_message("after-restart-live")
        history = [m["id"] for m in b.messages] + [m["id"] for m in backlog] + [m["id"] for m in b2.messages]
        everything = stored_messages(ref)
        assert history == [row[0] for row in everything]  # every message exactly once, in order
        assert [row[1] for row in everything] == list(range(1, 9))
        assert [m["id"] for m in sent] == [row[0] for row in everything[:7]]
        full = a2.call("backfill", {"ref": ref, "after_seq": 0})["messages"]
        assert [m["id"] for m in full] == history
    finally:
        for client in clients:
            if client.connected:
                client.disconnect()
        server.stop()
        socketio.server = app.extensions[SERVER_KEY]  # create_app() pointed it at the fresh app
        with fresh.app_context():
            db.engine.dispose()


# --- refusal -------------------------------------------------------------------------------------


def test_a_non_party_is_refused_and_hears_nothing(make, peers, real_client):
    a, b, ref = peers
    db.session.rollback()  # end the test's SQLite snapshot before writing (the server has written)
    stranger = make.specialist(name="Dr Outsider")
    s = Peer(real_client(stranger), stranger.id)
    ack = s.call("join", {"ref": ref, "after_seq": 0})
    assert ack["ok"] is False and ack["status"] == 404 and ack["error"] == "not_found"
    assert "messages" not in ack
    sent = s.call("send", {"ref": ref, "client_id": "outsider-01", "body": "let me in"})
    assert sent["ok"] is False and sent["status"] == 404
    a.send(ref, "private-001", "confidential findings")
    b.wait_for_message("private-001")
    a.call("typing", {"ref": ref, "typing": True})
    b.call("read", {"ref": ref, "seq": 1})
    a.wait_until(lambda: bool(a.events_named("read")), "the read receipt")
    assert s.messages == [] and s.other == []
    db.session.rollback()
    denied = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "room.access_denied")).all()
    assert [e.actor_id for e in denied] == [stranger.id, stranger.id]
    assert [row[2] for row in stored_messages(ref)] == ["private-001"]


def test_an_anonymous_socket_is_refused_by_the_real_server(live_server):
    client = sio_client.Client(reconnection=False)
    with pytest.raises(sio_client.exceptions.ConnectionError):
        client.connect(live_server.url, namespaces=[NS], transports=["websocket"], wait_timeout=5)
    assert not client.connected


def test_an_oversized_frame_closes_only_its_own_connection(app, make, peers, real_client, live_server):
    """Over a real transport the Engine.IO frame limit refuses it before any handler runs."""
    a, b, ref = peers
    db.session.rollback()  # end the test's SQLite snapshot before writing (the server has written)
    rural2, specialist2 = make.rural(), make.specialist()
    other_ref = make.scheduled(rural2, specialist2).ref
    c, d = Peer(real_client(rural2), rural2.id), Peer(real_client(specialist2), specialist2.id)
    c.join(other_ref)
    d.join(other_ref)

    huge = "x" * (app.config["SOCKET_MAX_PAYLOAD_BYTES"] + 1)
    a.client.emit("send", {"ref": ref, "client_id": "oversized-01", "body": huge}, namespace=NS)
    assert a.disconnected.wait(TIMEOUT), "the oversized frame was accepted"
    # the other party, and another room, carry on as if nothing happened
    assert b.send(ref, "peer-carries-on", "still here")["ok"] is True
    assert c.send(other_ref, "other-room-on", "unaffected")["ok"] is True
    d.wait_for_message("other-room-on")
    # the sender reconnects and backfills; nothing of the oversized message was stored
    a2 = Peer(connect(live_server.url, a.client.http_session), a.user_id)
    try:
        assert [m["client_id"] for m in a2.join(ref)["messages"]] == ["peer-carries-on"]
    finally:
        a2.client.disconnect()
    assert [row[2] for row in stored_messages(ref)] == ["peer-carries-on"]
    assert d.messages[0]["client_id"] == "other-room-on" and len(d.messages) == 1


# --- attachments ---------------------------------------------------------------------------------


def test_a_chat_image_is_uploaded_over_http_announced_over_the_socket_and_guarded(make, peers, live_server):
    a, b, ref = peers
    session = a.client.http_session
    page = session.get(f"{live_server.url}/consults/{ref}/room", timeout=10)
    assert page.status_code == 200
    token = re.search(r'data-csrf="([^"]+)"', page.text).group(1)
    original = png_bytes()
    upload = session.post(f"{live_server.url}/consults/{ref}/attachments",
                          files={"file": ("wound.png", original, "image/png")}, data={"csrf_token": token},
                          headers={"Accept": "application/json"}, timeout=10)
    assert upload.status_code == 201, upload.text[:300]
    item = upload.json()
    assert item["content_type"] == "image/png" and item["url"].endswith(f"/attachments/{item['id']}")

    ack = a.send(ref, "image-msg-01", "", attachment_id=item["id"])
    assert ack["ok"] is True, ack
    got = b.wait_for_message("image-msg-01")
    assert got["id"] == ack["message"]["id"] and got["body"] == ""
    assert got["attachment"]["id"] == item["id"]
    assert got["attachment"]["content_type"] == "image/png"
    assert got["attachment"]["url"] == item["url"]

    download = b.client.http_session.get(live_server.url + got["attachment"]["url"], timeout=10)
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(download.content)) as image:
        assert image.size == (64, 48)

    db.session.rollback()  # end the test's SQLite snapshot before writing (the server has written)
    stranger = make.rural(name="Dr Not Involved")
    outsider = http_session(live_server.url, stranger.email)
    refused = outsider.get(live_server.url + got["attachment"]["url"], timeout=10)
    assert refused.status_code == 404
    assert original not in refused.content


def test_a_fake_image_a_missing_csrf_token_or_an_unknown_attachment_is_refused(peers, live_server):
    a, _b, ref = peers
    session = a.client.http_session
    token = re.search(r'data-csrf="([^"]+)"', session.get(f"{live_server.url}/consults/{ref}/room",
                                                          timeout=10).text).group(1)
    fake = session.post(f"{live_server.url}/consults/{ref}/attachments",
                        files={"file": ("evil.png", b"<script>alert(1)</script>", "image/png")},
                        data={"csrf_token": token}, headers={"Accept": "application/json"}, timeout=10)
    assert fake.status_code == 415 and fake.json()["error"] == "unsupported_file"
    no_csrf = session.post(f"{live_server.url}/consults/{ref}/attachments",
                           files={"file": ("x.png", png_bytes(), "image/png")},
                           headers={"Accept": "application/json"}, timeout=10)
    assert no_csrf.status_code == 400
    bogus = a.send(ref, "bogus-attach-1", "", attachment_id=987654)
    assert bogus["ok"] is False and bogus["status"] == 422
    assert stored_messages(ref) == []
