"""The /notes Socket.IO namespace with the Flask-SocketIO test client: auth, access, sync, validation."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.notes.conftest import NS
from tests.notes.peers import Peer
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import AuditEvent, NoteUpdate
from webapp.notes import services


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Fresh:
    """Handlers end with db.session.remove(), which detaches the test's objects: reload by key."""

    def __init__(self, obj) -> None:
        self.model, self.key = type(obj), obj.id

    def __call__(self):
        return db.session.get(self.model, self.key)

    def __getattr__(self, name: str):
        return getattr(self(), name)


@dataclass
class Room:
    rural: Fresh
    specialist: Fresh
    consult: Fresh
    a: Any  # the rural doctor's Socket.IO test client
    b: Any  # the specialist's


@pytest.fixture
def room(make, sio):
    """A scheduled consult with both parties connected to /notes (not yet joined)."""
    rural, specialist = make.rural(name="Dr Ma Xiaoli"), make.specialist(name="Dr Zhou Wei")
    consult = make.scheduled(rural, specialist)
    rural, specialist, consult = Fresh(rural), Fresh(specialist), Fresh(consult)
    return Room(rural, specialist, consult, sio(rural()), sio(specialist()))


def events(client, name: str) -> list:
    """The payloads of one event received since the last call (the queue is drained)."""
    return [e["args"][0] for e in client.get_received(NS) if e["name"] == name]


def call(client, event: str, data) -> dict:
    return client.emit(event, data, namespace=NS, callback=True)


def join(client, ref: str, peer: Peer | None = None) -> dict:
    ack = call(client, "join", {"ref": ref, "state_vector": b64(peer.state()) if peer else None})
    assert ack["ok"] is True, ack
    if peer is not None:
        peer.receive(base64.b64decode(ack["update"]))
    return ack


def send(client, ref: str, update: bytes) -> dict:
    return call(client, "update", {"ref": ref, "update": b64(update)})


def assert_error(ack, status: int, error: str | None = None) -> None:
    assert isinstance(ack, dict), ack
    assert ack["ok"] is False and ack["status"] == status, ack
    assert isinstance(ack["message"], str) and ack["message"]
    if error is not None:
        assert ack["error"] == error, ack


def stored() -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(NoteUpdate))


def audits(action: str) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action))


def test_unauthenticated_connection_is_refused(sio):
    client = sio()
    assert not client.is_connected(NS)


def test_non_party_is_refused_and_audited(make, sio):
    rural, specialist = make.rural(), make.specialist()
    ref = make.scheduled(rural, specialist).ref
    client = sio(make.rural())
    assert client.is_connected(NS)
    assert_error(call(client, "join", {"ref": ref}), 404, "not_found")
    assert audits("notes.access_denied") == 1
    assert_error(send(client, ref, Peer("x").append("plan", "intrusion")), 404)
    assert_error(call(client, "sync", {"ref": ref}), 404)
    assert audits("notes.access_denied") == 3
    assert stored() == 0


def test_coordinator_may_read_but_not_edit(make, sio):
    rural, specialist, coordinator = make.rural(), make.specialist(), make.coordinator()
    consult, rural = Fresh(make.scheduled(rural, specialist)), Fresh(rural)
    writer, reader = sio(rural()), sio(coordinator)
    join(writer, consult.ref)
    services.apply_update(rural(), consult(), Peer("a").append("history", "Chest pain"))
    peer = Peer("coord")
    ack = join(reader, consult.ref, peer)
    assert ack["can_edit"] is False and ack["read_only"] is False
    assert peer.text("history") == "Chest pain"
    assert audits("notes.opened") == 2  # the coordinator's access is on record
    assert_error(send(reader, consult.ref, peer.append("history", " edited")), 403, "forbidden")
    assert_error(call(reader, "focus", {"ref": consult.ref, "section": "plan"}), 403)
    assert stored() == 1


def test_edits_are_persisted_acknowledged_and_broadcast_to_the_other_party(room):
    rural, consult, a, b = room.rural, room.consult, room.a, room.b
    pa, pb = Peer("a"), Peer("b")
    ack = join(a, consult.ref, pa)
    assert ack["can_edit"] is True and ack["sections"] == list(services.SECTIONS)
    join(b, consult.ref, pb)
    a.get_received(NS), b.get_received(NS)

    update = pa.append("history", "Exertional chest pain")
    ack = send(a, consult.ref, update)
    assert ack["ok"] is True and isinstance(ack["id"], int) and ack["duplicate"] is False
    assert db.session.get(NoteUpdate, ack["id"]).author_id == rural.id  # stored before the ack
    assert events(a, "update") == []  # the sender is skipped
    [received] = events(b, "update")
    assert received["user_id"] == rural.id and received["name"] == "Dr Ma Xiaoli"
    assert received["sections"] == ["history"] and received["id"] == ack["id"]
    pb.receive(base64.b64decode(received["update"]))
    assert pb.text("history") == "Exertional chest pain"

    again = send(a, consult.ref, update)  # a retry after a lost ack
    assert again["ok"] is True and again["duplicate"] is True and again["id"] is None
    assert events(b, "update") == []


def test_concurrent_edits_through_the_handlers_converge(room):
    consult, a, b = room.consult, room.a, room.b
    pa, pb = Peer("a", seed=1), Peer("b", seed=2)
    join(a, consult.ref, pa)
    join(b, consult.ref, pb)
    for i in range(150):
        # Both edit before seeing each other's latest change, then deliver what they received.
        assert send(a, consult.ref, pa.insert_token("plan")[1])["ok"]
        assert send(b, consult.ref, pb.insert_token("plan")[1])["ok"]
        if i % 3 == 0:
            for client, peer in ((a, pa), (b, pb)):
                for msg in events(client, "update"):
                    peer.receive(base64.b64decode(msg["update"]))
    for client, peer in ((a, pa), (b, pb)):
        for msg in events(client, "update"):
            peer.receive(base64.b64decode(msg["update"]))
    server = services.text_of(consult())["plan"]
    assert pa.text("plan") == pb.text("plan") == server
    assert all(token in server for token in pa.tokens + pb.tokens) and len(pa.tokens + pb.tokens) == 300


def test_offline_edits_merge_on_rejoin(room, sio):
    rural, consult, a, b = room.rural, room.consult, room.a, room.b
    pa, pb = Peer("a", seed=3), Peer("b", seed=4)
    join(a, consult.ref, pa)
    join(b, consult.ref, pb)
    assert send(a, consult.ref, pa.append("findings", "BP 150/90. "))["ok"]
    a.disconnect(NS)
    offline = [pa.insert_token("findings")[0] for _ in range(20)]  # typed while disconnected
    for msg in events(b, "update"):
        pb.receive(base64.b64decode(msg["update"]))
    for _ in range(20):
        assert send(b, consult.ref, pb.insert_token("findings")[1])["ok"]

    a2 = sio(rural())  # the reconnect: a new connection, join with the state vector
    ack = join(a2, consult.ref, pa)
    back = send(a2, consult.ref, pa.missing_for(base64.b64decode(ack["state_vector"])))
    assert back["ok"] is True and back["id"] is not None
    for msg in events(b, "update"):
        pb.receive(base64.b64decode(msg["update"]))
    server = services.text_of(consult())["findings"]
    assert pa.text("findings") == pb.text("findings") == server
    assert all(token in server for token in offline + pb.tokens)


@pytest.mark.parametrize("payload", [
    {"update": "%%% not base64 %%%"},
    {"update": b64(b"\xff\xfe garbage")},
    {"update": b64(b"")},
    {"update": 42},
    {"update": None},
    {"update": ["a"]},
    {"update": "QUJD" * 40_000},  # too large
])
def test_malformed_updates_get_an_error_ack_and_the_handler_survives(room, payload):
    consult, a = room.consult, room.a
    pa = Peer("a")
    join(a, consult.ref, pa)
    assert_error(call(a, "update", {"ref": consult.ref, **payload}), 422, "invalid_input")
    assert send(a, consult.ref, pa.append("plan", "still works"))["ok"] is True
    assert services.text_of(consult())["plan"] == "still works"


@pytest.mark.parametrize("payload", ["not a dict", ["list"], None, 5])
def test_non_object_payloads_are_refused(room, payload):
    a = room.a
    for event in ("join", "sync", "update", "focus"):
        assert_error(a.emit(event, payload, namespace=NS, callback=True), 422)


def test_bad_state_vectors_and_refs(room):
    consult, a = room.consult, room.a
    assert_error(call(a, "join", {"ref": consult.ref, "state_vector": "%%%"}), 422)
    assert_error(call(a, "join", {"ref": consult.ref, "state_vector": b64(b"\xff\xff\xff")}), 422)
    assert_error(call(a, "join", {"ref": 12}), 422)
    assert_error(call(a, "join", {"ref": "nope"}), 404)


def test_events_before_join_are_refused(room):
    consult, a = room.consult, room.a
    assert_error(send(a, consult.ref, Peer("a").append("plan", "x")), 422)
    assert_error(call(a, "focus", {"ref": consult.ref, "section": "plan"}), 422)
    assert stored() == 0


def test_focus_shows_who_edits_which_section(room):
    rural, consult, a, b = room.rural, room.consult, room.a, room.b
    join(a, consult.ref)
    join(b, consult.ref)
    b.get_received(NS)
    assert call(a, "focus", {"ref": consult.ref, "section": "assessment", "cursor": "AQID"})["ok"]
    assert events(b, "focus") == [{"user_id": rural.id, "name": "Dr Ma Xiaoli", "section": "assessment",
                                   "cursor": "AQID"}]
    assert events(a, "focus") == []
    # a newcomer learns who is editing where
    late = join(b, consult.ref)
    assert late["editors"] == [{"user_id": rural.id, "name": "Dr Ma Xiaoli", "section": "assessment",
                                "cursor": "AQID"}]
    assert_error(call(a, "focus", {"ref": consult.ref, "section": "diary"}), 422)
    assert_error(call(a, "focus", {"ref": consult.ref, "section": "plan", "cursor": "<script>"}), 422)
    a.disconnect(NS)
    assert events(b, "focus") == [{"user_id": rural.id, "name": "Dr Ma Xiaoli", "section": None,
                                   "cursor": None}]


def test_sign_off_broadcasts_read_only_and_refuses_later_edits(room):
    specialist, consult, a, b = room.specialist, room.consult, room.a, room.b
    pa = Peer("a")
    join(a, consult.ref, pa)
    join(b, consult.ref)
    assert send(a, consult.ref, pa.append("assessment", "Stable angina"))["ok"]
    b.get_received(NS)
    consults.save_recommendation(specialist(), consult.ref, consults.RecommendationData(
        assessment="Stable angina", plan="Aspirin"), sign=True)
    assert events(b, "read_only") == [{"signed": True}]
    assert_error(send(a, consult.ref, pa.append("assessment", " (edited late)")), 409, "read_only")
    ack = join(b, consult.ref, Peer("b"))
    assert ack["read_only"] is True and ack["can_edit"] is False
    assert services.signed_notes(consult())["assessment"] == "Stable angina"


def test_rate_limited_edits_are_not_lost(room, app, monkeypatch):
    consult, a = room.consult, room.a
    monkeypatch.setitem(app.config, "NOTES_UPDATES_PER_SECOND", 3)
    services.reset_rate_limits()
    pa = Peer("a")
    join(a, consult.ref, pa)
    acks = [send(a, consult.ref, pa.append("plan", f"{i} ")) for i in range(6)]
    limited = [ack for ack in acks if not ack["ok"]]
    assert limited and all(ack["error"] in ("rate_limited", "invalid_input") for ack in limited)
    assert any(ack["error"] == "rate_limited" for ack in limited)
    monkeypatch.setitem(app.config, "NOTES_UPDATES_PER_SECOND", 10_000)
    services.reset_rate_limits()
    ack = call(a, "sync", {"ref": consult.ref, "state_vector": b64(pa.state())})  # what the client does next
    assert send(a, consult.ref, pa.missing_for(base64.b64decode(ack["state_vector"])))["ok"]
    assert services.text_of(consult())["plan"] == "0 1 2 3 4 5 "
