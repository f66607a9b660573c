"""The notes over a real server: python-socketio clients, each with its own pycrdt replica.

Two clients make hundreds of interleaved edits to the same section at the same time, one goes
offline and keeps editing, reconnects and merges; at the end both replicas, the server's live
document and a document rebuilt from the database alone are identical and contain every edit.
With more at the table, three editors (requester, lead and second specialist) and a trainee who
reads along: all four converge, the trainee's own update is refused, and a removed participant's
open socket is refused on its next update and hears nothing more.
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
from webapp.consults import participants
from webapp.extensions import db
from webapp.models import Consult, ConsultParticipant, NoteUpdate, utcnow
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
        self.errors: list[dict] = []
        self.received: list[int] = []  # the ids of the updates the server relayed to this client
        self.sio = self._client()

    def _client(self) -> sio_client.Client:
        client = sio_client.Client(reconnection=False)
        client.on("update", self._on_update, namespace=NS)
        return client

    def _on_update(self, msg: dict) -> None:
        self.peer.receive(base64.b64decode(msg["update"]))
        self.received.append(msg["id"])

    def connect(self) -> None:
        self.sio.connect(self.base_url, namespaces=[NS], transports=["websocket"],
                         headers={"Cookie": self.cookie}, wait_timeout=10)
        self.join()

    def join(self) -> dict:
        """Exchange state vectors: take what we lack, send what the server lacks (offline edits)."""
        ack = self.sio.call("join", {"ref": self.ref, "state_vector": b64(self.peer.state())},
                            namespace=NS, timeout=20)
        assert ack["ok"] is True, ack
        self.peer.receive(base64.b64decode(ack["update"]))
        if ack["can_edit"]:  # a reader (trainee) has nothing to send
            self.send(self.peer.missing_for(base64.b64decode(ack["state_vector"])))
        return ack

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


THREE_EDIT = 120  # each of three editors, at once


@pytest.fixture
def table(app, make, real_socket_server, live_server):
    """A scheduled consult with a second specialist and a trainee; a live client for each of the four."""
    requester, lead = make.rural(name="Dr Ma Xiaoli"), make.specialist(name="Dr Zhou Wei")
    consult = make.scheduled(requester, lead)
    second = make.second_specialist(consult, name="Dr Lin Hua")
    trainee = make.trainee(consult, name="Dr Wang Fang")
    clients = {role: LiveEditor(live_server.url, user, consult.ref, role[0], seed=n)
               for n, (role, user) in enumerate((("requester", requester), ("lead", lead),
                                                  ("second", second), ("trainee", trainee)), start=1)}
    yield consult, {"requester": requester, "lead": lead, "second": second, "trainee": trainee}, clients
    for client in clients.values():
        if client.sio.connected:
            client.sio.disconnect()


def test_three_editors_and_a_trainee_over_a_real_server(table):
    consult, users, clients = table
    consult_id, ref = consult.id, consult.ref
    editors = [clients[role] for role in ("requester", "lead", "second")]
    trainee = clients["trainee"]
    for client in clients.values():
        client.connect()

    def server_text(section: str = "history") -> str:
        db.session.rollback()
        return services.text_of(db.session.get(Consult, consult_id))[section]

    def stored_ids(**where) -> list[int]:
        db.session.rollback()
        return list(db.session.scalars(db.select(NoteUpdate.id).filter_by(consult_id=consult_id, **where)
                                       .order_by(NoteUpdate.id)))

    # 1. Three editors type into the same section at once; the trainee only reads along.
    threads = [threading.Thread(target=e.edit, args=(THREE_EDIT,)) for e in editors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(e.errors for e in editors), [e.errors[:3] for e in editors]
    assert wait_until(lambda: len({c.peer.text() for c in clients.values()} | {server_text()}) == 1, timeout=30)
    final = trainee.peer.text()
    tokens = [token for e in editors for token in e.peer.tokens]
    assert len(tokens) == 3 * THREE_EDIT
    for token in tokens:  # no lost update, none applied twice
        assert final.count(token) == 1, token
    all_ids = stored_ids()
    assert len(all_ids) == 3 * THREE_EDIT  # one stored row per edit
    for role, editor in zip(("requester", "lead", "second"), editors, strict=True):
        assert len(stored_ids(author_id=users[role].id)) == THREE_EDIT
        others = set(all_ids) - set(stored_ids(author_id=users[role].id))
        assert sorted(editor.received) == sorted(others)  # each of the others' updates once, never its own
    assert sorted(trainee.received) == all_ids  # the trainee got every update live, each once
    assert read_state_vector(trainee.peer.state()) == read_state_vector(editors[0].peer.state())

    # 2. The trainee's own update is refused with an error ack; nothing of it is stored or relayed.
    ack = trainee.send(Peer("t", 7).append("history", "a trainee's edit"))  # on a scratch replica
    assert ack["ok"] is False and ack["status"] == 403 and ack["message"], ack
    assert not stored_ids(author_id=users["trainee"].id)
    assert server_text() == final

    # 3. The second specialist is removed while the socket is open (the row ended directly, as on
    # another node whose disconnect order was lost): the next update is refused like a non-party's...
    db.session.rollback()
    row = db.session.scalar(db.select(ConsultParticipant).filter_by(consult_id=consult_id,
                                                                  user_id=users["second"].id))
    row.removed_at, row.removed_by_id = utcnow(), users["requester"].id
    db.session.commit()
    second = clients["second"]
    ack = second.send(Peer("s", 8).append("history", "after the removal"))
    assert ack["ok"] is False and ack["status"] == 404, ack
    assert server_text() == final
    # ... and it hears no more of the notes, while the others go on.
    heard = len(second.received)
    clients["requester"].edit(5)
    assert not clients["requester"].errors
    assert wait_until(lambda: trainee.peer.text() == clients["lead"].peer.text() == server_text() != final)
    time.sleep(0.5)  # the relay to the others has arrived; the removed socket would have had it too
    assert len(second.received) == heard and second.peer.text() != server_text()

    # 4. A removal through the service closes the trainee's open notes socket on the server side.
    participants.remove(users["requester"], ref, users["trainee"].id)
    assert wait_until(lambda: not trainee.sio.connected, timeout=10), "the removed trainee's socket stays open"
