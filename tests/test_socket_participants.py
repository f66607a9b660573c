"""The participant roles over the three Socket.IO namespaces (/room, /notes, /call), and a
participant removed while their sockets are open: refused on their next event."""

from __future__ import annotations

import base64
import time

import pytest
from sqlalchemy import select

from tests.notes.peers import Peer
from webapp.consults import participants
from webapp.extensions import db
from webapp.models import ConsultParticipant, Message, utcnow

pytestmark = pytest.mark.usefixtures("generous_chat")

SENDING = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n"
RECEIVING = SENDING.replace("a=sendrecv", "a=recvonly") + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n"


def ack_of(client, ns: str, event: str, data: dict) -> dict:
    ack = client.emit(event, data, namespace=ns, callback=True)
    assert isinstance(ack, dict), ack
    return ack


def refused(ack: dict, status: int) -> bool:
    return ack["ok"] is False and ack["status"] == status and bool(ack["message"])


def test_every_role_in_the_chat(team, party_socket, make):
    consult, requester, lead, second, trainee = team
    ref = consult.ref
    socks = {u.id: party_socket(u, "/room", ref) for u in (requester, lead, second, trainee)}
    for n, user in enumerate((requester, lead, second, trainee)):  # everyone writes, the trainee asks
        ack = ack_of(socks[user.id], "/room", "send", {"ref": ref, "client_id": f"roles-msg-{n:04d}",
                                                       "body": f"from {user.id}"})
        assert ack["ok"] is True, (user, ack)
    db.session.rollback()
    assert [m.sender_id for m in db.session.scalars(select(Message).order_by(Message.seq))] == \
        [requester.id, lead.id, second.id, trainee.id]
    for user in (requester, lead, second, trainee):  # each reader sends receipts
        assert ack_of(socks[user.id], "/room", "read", {"ref": ref, "seq": 4})["ok"] is True
    received = [e["args"] for e in socks[trainee.id].get_received("/room") if e["name"] == "message"]
    assert len(received) >= 3  # the trainee sees the chat live
    coordinator = make.coordinator()
    coord = party_socket(coordinator, "/room", ref)
    assert refused(ack_of(coord, "/room", "send", {"ref": ref, "client_id": "coord-msg-0001", "body": "x"}), 403)
    assert refused(ack_of(coord, "/room", "read", {"ref": ref, "seq": 1}), 403)


def _update(peer: Peer, text: str) -> str:
    return base64.b64encode(peer.append("history", text)).decode()


def test_every_role_in_the_notes(team, party_socket):
    consult, requester, lead, second, trainee = team
    ref = consult.ref
    for user, can_edit in ((requester, True), (lead, True), (second, True), (trainee, False)):
        sock = party_socket(user, "/notes")
        ack = ack_of(sock, "/notes", "join", {"ref": ref, "state_vector": None})
        assert ack["ok"] is True and ack["can_edit"] is can_edit, (user, ack)
        update = ack_of(sock, "/notes", "update", {"ref": ref, "update": _update(Peer(f"p{user.id}", user.id), "x")})
        assert update["ok"] is can_edit, (user, update)
        if not can_edit:  # trainees read the notes only
            assert refused(update, 403)
            assert refused(ack_of(sock, "/notes", "focus", {"ref": ref, "section": "history"}), 403)


def test_every_role_in_the_call(team, party_socket):
    consult, requester, lead, second, trainee = team
    ref = consult.ref
    joined = {}
    for user in (lead, second, requester, trainee):
        sock = party_socket(user, "/call")
        ack = ack_of(sock, "/call", "join", {"ref": ref})
        assert ack["ok"] is True, (user, ack)
        joined[user.id] = (sock, ack)
    # the polite peer by role order: the lead alone is impolite
    assert [joined[u.id][1]["polite"] for u in (lead, second, requester, trainee)] == [False, True, True, True]
    for user in (lead, second, requester):
        assert ack_of(joined[user.id][0], "/call", "signal", {"ref": ref, "type": "offer", "sdp": SENDING})["ok"]
    trainee_sock = joined[trainee.id][0]
    assert refused(ack_of(trainee_sock, "/call", "signal", {"ref": ref, "type": "offer", "sdp": SENDING}), 403)
    assert ack_of(trainee_sock, "/call", "signal", {"ref": ref, "type": "answer", "sdp": RECEIVING})["ok"] is True


def test_removed_participant_is_refused_on_the_next_event_of_every_namespace(team, party_socket):
    """The row is ended directly (as another node would, its disconnect order lost): each event asks
    the policy again, the chat's fast path included."""
    consult, requester, _lead, second, trainee = team
    ref = consult.ref
    room = party_socket(trainee, "/room", ref)
    notes = party_socket(second, "/notes", ref, state_vector=None)
    call = party_socket(second, "/call", ref)
    assert ack_of(room, "/room", "send", {"ref": ref, "client_id": "before-rm-0001", "body": "q"})["ok"] is True
    db.session.rollback()
    for row in db.session.scalars(select(ConsultParticipant).where(
            ConsultParticipant.consult_id == consult.id,
            ConsultParticipant.user_id.in_([trainee.id, second.id]))):
        row.removed_at, row.removed_by_id = utcnow(), requester.id
    db.session.commit()
    # the fast path's guard finds no active participation; the ordinary path answers like any non-party
    assert refused(ack_of(room, "/room", "send", {"ref": ref, "client_id": "after-rm-0001", "body": "q2"}), 404)
    assert refused(ack_of(room, "/room", "typing", {"ref": ref}), 404)
    assert refused(ack_of(room, "/room", "read", {"ref": ref, "seq": 1}), 404)
    assert refused(ack_of(notes, "/notes", "update", {"ref": ref, "update": _update(Peer("s"), "x")}), 404)
    assert refused(ack_of(call, "/call", "signal", {"ref": ref, "type": "offer", "sdp": SENDING}), 404)
    db.session.rollback()
    assert [m.body for m in db.session.scalars(select(Message).where(Message.sender_id == trainee.id))] == ["q"]


def test_removal_through_the_service_closes_the_open_sockets(team, party_socket):
    consult, requester, _lead, _second, trainee = team
    room = party_socket(trainee, "/room", consult.ref)
    participants.remove(requester, consult.ref, trainee.id)
    deadline = time.monotonic() + 10  # the re-check runs as a background task, off the request
    while room.is_connected("/room") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not room.is_connected("/room"), "the removed trainee's socket is closed by the server"
