"""The notes over a real server: two python-socketio clients, each with its own pycrdt replica.

They make hundreds of interleaved edits to the same section at the same time, one goes offline
and keeps editing, reconnects and merges; at the end both replicas, the server's live document and
a document rebuilt from the database alone are identical and contain every edit.
"""

from __future__ import annotations

import base64
import threading
import time

import pytest
import socketio as sio_client

from tests.conftest import cookie_header, http_session
from tests.notes.conftest import NS
from tests.notes.peers import Peer
from webapp.extensions import db
from webapp.models import Consult
from webapp.notes import services
from webapp.notes.yupdate import read_state_vector

EDITS_EACH = 250


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class LiveEditor:
    """A signed-in Socket.IO client editing its own replica, as notes.js does in the browser."""

    def __init__(self, base_url: str, user, ref: str, name: str, seed: int) -> None:
        self.base_url, self.ref = base_url, ref
        self.peer = Peer(name, seed)
        self.cookie = cookie_header(http_session(base_url, user.email))
        self.sio = self._client()
        self.errors: list[dict] = []

    def _client(self) -> sio_client.Client:
        client = sio_client.Client(reconnection=False)
        client.on("update", lambda msg: self.peer.receive(base64.b64decode(msg["update"])), namespace=NS)
        return client

    def connect(self) -> None:
        self.sio.connect(self.base_url, namespaces=[NS], transports=["websocket"],
                         headers={"Cookie": self.cookie}, wait_timeout=10)
        self.join()

    def join(self) -> None:
        """Exchange state vectors: take what we lack, send what the server lacks (offline edits)."""
        ack = self.sio.call("join", {"ref": self.ref, "state_vector": b64(self.peer.state())},
                            namespace=NS, timeout=20)
        assert ack["ok"] is True, ack
        self.peer.receive(base64.b64decode(ack["update"]))
        mine = self.peer.missing_for(base64.b64decode(ack["state_vector"]))
        self.send(mine)

    def send(self, update: bytes) -> dict:
        ack = self.sio.call("update", {"ref": self.ref, "update": b64(update)}, namespace=NS, timeout=20)
        if not ack.get("ok"):
            self.errors.append(ack)
        return ack

    def edit(self, count: int, section: str = "history") -> None:
        for _ in range(count):
            self.send(self.peer.insert_token(section)[1])

    def disconnect(self) -> None:
        self.sio.disconnect()
        self.sio = self._client()


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def editors(app, make, real_socket_server, live_server):
    rural, specialist = make.rural(name="Dr Ma Xiaoli"), make.specialist(name="Dr Zhou Wei")
    consult = make.scheduled(rural, specialist)
    a = LiveEditor(live_server.url, rural, consult.ref, "a", seed=1)
    b = LiveEditor(live_server.url, specialist, consult.ref, "b", seed=2)
    yield consult, a, b
    for editor in (a, b):
        if editor.sio.connected:
            editor.sio.disconnect()


def test_two_clients_editing_one_section_at_once_over_a_real_server(editors):
    consult, a, b = editors
    consult_id = consult.id
    a.connect()
    b.connect()

    # 1. Hundreds of concurrent edits to the same section, from two threads at full speed.
    threads = [threading.Thread(target=e.edit, args=(EDITS_EACH,)) for e in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not a.errors and not b.errors, (a.errors[:3], b.errors[:3])

    def server_text() -> str:
        db.session.rollback()
        return services.text_of(db.session.get(Consult, consult_id))["history"]

    assert wait_until(lambda: a.peer.text() == b.peer.text() == server_text())
    final = a.peer.text()
    assert len(a.peer.tokens) == len(b.peer.tokens) == EDITS_EACH
    for token in a.peer.tokens + b.peer.tokens:
        assert final.count(token) == 1, token

    # 2. One client drops off, keeps typing; the other keeps typing online; then it reconnects.
    a.disconnect()
    offline = []
    for _ in range(40):
        offline.append(a.peer.insert_token("history")[0])
    b.edit(40)
    assert offline[0] not in server_text()
    a.connect()
    assert wait_until(lambda: a.peer.text() == b.peer.text() == server_text())
    merged = a.peer.text()
    for token in a.peer.tokens + b.peer.tokens:
        assert merged.count(token) == 1, token
    assert not a.errors and not b.errors

    # 3. The database alone gives the same document (a restart).
    db.session.rollback()
    stored = db.session.get(Consult, consult_id)
    live_state = read_state_vector(services.state_vector(stored))
    services.forget()
    text, state = services.load_from_database(stored)
    assert text["history"] == merged
    assert read_state_vector(state) == live_state == read_state_vector(a.peer.state()) == \
        read_state_vector(b.peer.state())
    assert services.text_of(stored)["history"] == merged
