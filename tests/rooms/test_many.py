"""The room for N people: roles in the room, a trainee's questions marked, receipts per reader, and
four real clients (requester, lead, a second specialist, a trainee) on a real server."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select

from tests.rooms.test_events import NS, join, send
from tests.rooms.test_realserver import Peer, eventually, stored_messages
from webapp.auth import sessions
from webapp.extensions import db
from webapp.models import Consult, ConsultParticipant, Message, utcnow
from webapp.rooms import history, receipts, state
from webapp.rooms import send as sending
from webapp.rooms.wire import to_wire

pytestmark = pytest.mark.usefixtures("generous_chat")


@pytest.fixture
def team(make):
    """A scheduled consult with its requester, lead, a second specialist and a trainee."""
    requester = make.rural(name="Dr Ma Xiaoli")
    lead = make.specialist(name="Dr Zhou Wei")
    consult = make.scheduled(requester, lead)
    second = make.second_specialist(consult, name="Dr Lin Fang")
    trainee = make.trainee(consult, name="Dr Wu Jie")
    consult = db.session.scalar(select(Consult).where(Consult.ref == consult.ref))
    return consult, requester, lead, second, trainee


# --- services ------------------------------------------------------------------------------------


def test_a_trainees_message_keeps_the_role_it_was_written_in_on_both_paths(team):
    consult, requester, _lead, _second, trainee = team
    slow = sending.post_message(trainee, consult, "trainee-q-0001", "Why not thrombolysis?")
    assert slow.message.sender_role == "trainee" and to_wire(slow.message)["sender_role"] == "trainee"
    fast = sending.post_message_fast(sending.Sender(trainee.id, sessions.start(trainee), trainee.full_name,
                                                    consult.id), "trainee-q-0002", "And the CT window?")
    assert fast.wire is not None and fast.wire["sender_role"] == "trainee"
    mine = sending.post_message(requester, consult, "requester-0001", "Onset 3 h ago.")
    assert to_wire(mine.message)["sender_role"] == "requester"
    db.session.rollback()
    page = history.latest_messages(consult)  # history pages carry the stored role
    assert [(m.body, to_wire(m)["sender_role"]) for m in page.messages] == [
        ("Why not thrombolysis?", "trainee"), ("And the CT window?", "trainee"), ("Onset 3 h ago.", "requester")]


def test_receipts_are_kept_per_reader_and_tell_who_has_seen_a_message(team):
    consult, requester, lead, second, trainee = team
    for i in range(3):
        sending.post_message(requester, consult, f"req-msg-{i:04d}", f"message {i + 1}")
    assert receipts.mark_read(lead, consult, 3) == 3
    assert receipts.mark_read(second, consult, 2) == 2
    assert receipts.mark_read(trainee, consult, 99) == 3  # never ahead of the last message
    assert receipts.mark_read(second, consult, 1) == 2  # receipts only move forward
    read = receipts.read_receipts(consult)
    assert read == {lead.id: 3, second.id: 2, trainee.id: 3}
    assert receipts.readers_of(read, 3, exclude=requester.id) == sorted([lead.id, trainee.id])
    assert receipts.readers_of(read, 2, exclude=requester.id) == sorted([lead.id, second.id, trainee.id])


def test_the_room_knows_every_participants_role_and_a_coordinator_looking_in(team, make):
    consult, requester, lead, second, trainee = team
    coordinator = make.coordinator()
    assert receipts.participants(consult) == [
        {"user_id": lead.id, "name": lead.full_name, "role": "lead_specialist"},
        {"user_id": second.id, "name": second.full_name, "role": "specialist"},
        {"user_id": requester.id, "name": requester.full_name, "role": "requester"},
        {"user_id": trainee.id, "name": trainee.full_name, "role": "trainee"},
    ]
    present = [{"user_id": uid, "name": "x", "connections": 1} for uid in (requester.id, trainee.id, coordinator.id)]
    assert [p["role"] for p in receipts.with_roles(consult, present)] == ["requester", "trainee", "coordinator"]


def test_room_state_is_per_app(app):
    first = state.room_state(app)
    assert state.room_state(app) is first
    state.reset(app)
    assert state.room_state(app) is not first


# --- Socket.IO (test client) ---------------------------------------------------------------------


def test_the_join_names_every_participant_with_roles_and_receipts_of_each_reader(team, sio):
    consult, requester, lead, second, trainee = team
    ref = consult.ref
    socks = {u.id: sio(u) for u in (requester, lead, second, trainee)}
    for sock in socks.values():
        join(sock, ref)
    asked = send(socks[trainee.id], ref, "trainee-q-0001", "Is the ECG ischaemic?")
    assert asked["message"]["sender_role"] == "trainee"
    for reader in (lead, second):
        assert socks[reader.id].emit("read", {"ref": ref, "seq": 1}, namespace=NS, callback=True)["ok"] is True
    late = sio(requester)
    ack = join(late, ref)
    assert ack["receipts"] == {str(lead.id): 1, str(second.id): 1}
    assert {p["user_id"]: p["role"] for p in ack["participants"]} == {
        requester.id: "requester", lead.id: "lead_specialist", second.id: "specialist", trainee.id: "trainee"}
    assert {p["user_id"]: p["role"] for p in ack["people"]} == {
        requester.id: "requester", lead.id: "lead_specialist", second.id: "specialist", trainee.id: "trainee"}
    assert [m["sender_role"] for m in ack["messages"]] == ["trainee"]


# --- a real server, four clients -----------------------------------------------------------------


def test_four_real_clients_get_every_message_once_in_order_with_receipts_per_reader(team, real_client):
    """Requester, lead, second specialist and trainee send at once: every peer receives every message
    once, in sequence order; each reader's receipt reaches the others; a participant removed while
    their socket is open is refused on their next message by the fast send path."""
    consult, requester, lead, second, trainee = team
    ref = consult.ref
    users = {"requester": requester, "lead": lead, "second": second, "trainee": trainee}
    peers = {tag: Peer(real_client(u), u.id) for tag, u in users.items()}
    for peer in peers.values():
        peer.join(ref)
    per_peer = 8
    acks: dict[str, list[dict[str, Any]]] = {tag: [] for tag in peers}
    errors: list[Any] = []

    def burst(tag: str) -> None:
        for i in range(per_peer):
            ack = peers[tag].send(ref, f"{tag}-many-{i:03d}", f"{tag} {i}", client_seq=i + 1)
            (acks[tag].append(ack["message"]) if ack.get("ok") else errors.append(ack))

    threads = [threading.Thread(target=burst, args=(tag,)) for tag in peers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert errors == []
    total = per_peer * len(peers)
    assert sorted(m["seq"] for side in acks.values() for m in side) == list(range(1, total + 1))
    for tag, side in acks.items():  # each sender's own order is kept
        assert [m["body"] for m in sorted(side, key=lambda m: m["seq"])] == [f"{tag} {i}" for i in range(per_peer)]
        assert {m["sender_role"] for m in side} == {"requester": {"requester"}, "lead": {"lead_specialist"},
                                                    "second": {"specialist"}, "trainee": {"trainee"}}[tag]
    for peer in peers.values():  # no loss, no duplicate, each sender's messages in their order, at every peer
        peer.wait_until(lambda p=peer: len(p.messages) >= total, f"{total} messages")
        got = [m["seq"] for m in peer.messages]
        assert len(got) == total and sorted(got) == list(range(1, total + 1)), got
        # Two senders' messages committed as 10 and 11 may be relayed 11 first (each after its own
        # commit, from its own connection's thread); the seq is the order, and room.js shows them by it
        for tag in acks:
            mine = [m["seq"] for m in peer.messages if m["body"].startswith(f"{tag} ")]
            assert mine == sorted(mine), (tag, mine)
    assert [s for _, s, _ in stored_messages(ref)] == list(range(1, total + 1))

    # receipts per reader: each reads up to a different point; everyone hears each receipt
    marks = {"lead": total, "second": total - 3, "trainee": 5}
    for tag, seq in marks.items():
        assert peers[tag].call("read", {"ref": ref, "seq": seq}) == {"ok": True, "seq": seq}
    expected = {users[tag].id: seq for tag, seq in marks.items()}
    for peer in peers.values():
        eventually(lambda p=peer: {r["user_id"]: r["seq"] for r in p.events_named("read")} == expected,
                   "every reader's receipt")
    assert peers["requester"].join(ref)["receipts"] == {str(uid): seq for uid, seq in expected.items()}

    # the second specialist is removed while connected (the row ended as another node would, its
    # disconnect order lost): the fast path's guard refuses the next message and nothing is stored
    db.session.rollback()
    row = db.session.scalar(select(ConsultParticipant).where(
        ConsultParticipant.consult_id == consult.id, ConsultParticipant.user_id == second.id))
    row.removed_at, row.removed_by_id = utcnow(), requester.id
    db.session.commit()
    refused = peers["second"].send(ref, "second-after-removal", "one more opinion", client_seq=per_peer + 1)
    assert refused["ok"] is False and refused["status"] == 404, refused
    ok = peers["trainee"].send(ref, "trainee-after-removal", "Thank you", client_seq=per_peer + 1)
    assert ok["ok"] is True and ok["message"]["seq"] == total + 1
    for tag in ("requester", "lead", "trainee"):
        peers[tag].wait_for_message("trainee-after-removal")
    db.session.rollback()
    assert db.session.scalar(select(Message).where(Message.client_id == "second-after-removal")) is None
    assert all(m["client_id"] != "second-after-removal" for p in peers.values() for m in p.messages)


def test_a_departure_is_announced_even_when_roles_cannot_be_read(team, sio, monkeypatch):
    """The people list's roles come from the database; if it fails the list still goes, without them."""
    from sqlalchemy.exc import OperationalError

    from tests.rooms.test_events import events

    consult, requester, lead, _second, _trainee = team
    stays, leaves = sio(requester), sio(lead)
    join(stays, consult.ref)
    join(leaves, consult.ref)
    stays.get_received(NS)

    def down(*args, **kwargs):
        raise OperationalError("SELECT", {}, Exception("database is down"))

    monkeypatch.setattr(receipts, "with_roles", down)
    leaves.disconnect(NS)
    assert [p["people"] for p in events(stays, "presence")][-1] == [
        {"user_id": requester.id, "name": requester.full_name, "connections": 1}]
