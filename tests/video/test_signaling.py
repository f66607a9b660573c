"""Signaling handlers (/call) with the Flask-SocketIO test client: membership, validation, no crash."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import AuditEvent, CallSession

OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


@pytest.fixture
def world(make):
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    return rural, specialist, consult


def _events(client, name):
    return [e["args"][0] for e in client.get_received("/call") if e["name"] == name]


def test_unauthenticated_connect_is_refused(call_client):
    client = call_client(None)
    assert not client.is_connected("/call")


def test_offer_answer_and_candidates_reach_only_the_other_party(call_client, world, make):
    rural, specialist, consult = world
    a, b = call_client(rural), call_client(specialist)
    ack_a = a.emit("join", {"ref": consult.ref}, namespace="/call", callback=True)
    assert ack_a["ok"] and ack_a["peers"] == [] and ack_a["polite"] is True
    ack_b = b.emit("join", {"ref": consult.ref}, namespace="/call", callback=True)
    assert ack_b["ok"] and ack_b["peers"] == [rural.id] and ack_b["polite"] is False
    assert _events(a, "peer-joined")[0]["user_id"] == specialist.id
    b.get_received("/call")

    assert b.emit("signal", {"ref": consult.ref, "type": "offer", "sdp": OFFER}, namespace="/call", callback=True)["ok"]
    got = _events(a, "signal")
    assert got == [{"type": "offer", "sdp": OFFER, "from": specialist.id}]
    assert _events(b, "signal") == []  # never echoed to the sender

    candidate = {"candidate": "candidate:1 1 udp 2122260223 10.0.0.2 50000 typ host", "sdpMid": "0",
                 "sdpMLineIndex": 0}
    assert a.emit("signal", {"ref": consult.ref, "type": "candidate", "candidate": candidate},
                  namespace="/call", callback=True)["ok"]
    assert _events(b, "signal")[0]["candidate"] == candidate

    assert a.emit("state", {"ref": consult.ref, "muted": True}, namespace="/call", callback=True)["ok"]
    assert _events(b, "peer-state") == [{"user_id": rural.id, "muted": True}]


@pytest.mark.parametrize("payload", [
    {"type": "offer", "sdp": "hello"},
    {"type": "offer", "sdp": 42},
    {"type": "offer", "sdp": "v=0\r\n" + "a" * 70_000},
    {"type": "offer", "sdp": "v=0\r\n\x00"},
    {"type": "candidate", "candidate": "not a dict"},
    {"type": "candidate", "candidate": {"candidate": "x" * 2000}},
    {"type": "candidate", "candidate": {"candidate": "candidate:1", "sdpMLineIndex": "zero"}},
    {"type": "hijack"},
    {},
])
def test_malformed_signals_get_an_error_ack_and_the_handler_keeps_working(call_client, world, payload):
    rural, specialist, consult = world
    a, b = call_client(rural), call_client(specialist)
    a.emit("join", {"ref": consult.ref}, namespace="/call", callback=True)
    b.emit("join", {"ref": consult.ref}, namespace="/call", callback=True)
    b.get_received("/call")
    ack = a.emit("signal", {"ref": consult.ref, **payload}, namespace="/call", callback=True)
    assert ack["ok"] is False and ack["status"] == 422 and ack["message"]
    assert _events(b, "signal") == []
    ok = a.emit("signal", {"ref": consult.ref, "type": "offer", "sdp": OFFER}, namespace="/call", callback=True)
    assert ok["ok"]


@pytest.mark.parametrize("payload", ["a string", ["list"], 7, None])
def test_non_object_payloads_get_an_error_ack(call_client, world, payload):
    rural, _, consult = world
    a = call_client(rural)
    ack = a.emit("join", payload, namespace="/call", callback=True)
    assert ack["ok"] is False and ack["error"] == "invalid_input"
    assert a.emit("join", {"ref": consult.ref}, namespace="/call", callback=True)["ok"]


def test_non_party_is_refused_audited_and_receives_nothing(call_client, world, make):
    rural, _specialist, consult = world
    outsider = make.specialist()
    coordinator = make.coordinator()
    a = call_client(rural)
    a.emit("join", {"ref": consult.ref}, namespace="/call", callback=True)
    for intruder in (outsider, coordinator):
        c = call_client(intruder)
        ack = c.emit("join", {"ref": consult.ref}, namespace="/call", callback=True)
        assert ack["ok"] is False and ack["status"] == 404
        ack = c.emit("signal", {"ref": consult.ref, "type": "offer", "sdp": OFFER}, namespace="/call", callback=True)
        assert ack["ok"] is False
        a.emit("signal", {"ref": consult.ref, "type": "offer", "sdp": OFFER}, namespace="/call", callback=True)
        assert _events(c, "signal") == []
    denied = db.session.scalars(select(AuditEvent).where(AuditEvent.consult_id == consult.id,
                                                         AuditEvent.action.in_(("call.access_denied",
                                                                                "room.access_denied")))).all()
    assert {e.actor_id for e in denied} == {outsider.id, coordinator.id}


def test_signal_before_join_is_refused(call_client, world):
    rural, _, consult = world
    a = call_client(rural)
    ack = a.emit("signal", {"ref": consult.ref, "type": "offer", "sdp": OFFER}, namespace="/call", callback=True)
    assert ack["ok"] is False and "Join" in ack["message"]


def test_call_closed_after_sign_off(call_client, world):
    from webapp.consults import services as consults

    rural, specialist, consult = world
    consults.save_recommendation(specialist, consult.ref, consults.RecommendationData(
        assessment="Stable angina", plan="Medical therapy"), sign=True)
    ack = call_client(rural).emit("join", {"ref": consult.ref}, namespace="/call", callback=True)
    assert ack["ok"] is False and ack["status"] in (403, 404)


def test_stats_are_recorded_for_coordinators(call_client, world):
    rural, _specialist, consult = world
    a = call_client(rural)
    a.emit("join", {"ref": consult.ref}, namespace="/call", callback=True)
    ack = a.emit("stats", {"ref": consult.ref, "connected": True, "setup_ms": 850, "relayed": True, "rtt_ms": 120,
                           "packet_loss_pct": 1.5, "bitrate_kbps": 600}, namespace="/call", callback=True)
    assert ack["ok"]
    bad = a.emit("stats", {"ref": consult.ref, "rtt_ms": -5}, namespace="/call", callback=True)
    assert bad["ok"] is False
    a.emit("leave", {"ref": consult.ref}, namespace="/call", callback=True)
    call = db.session.scalar(select(CallSession).where(CallSession.consult_id == consult.id))
    assert call.setup_ms == 850 and call.relayed is True and call.rtt_ms == 120 and call.connected_at is not None
    assert call.ended_at is not None and call.duration_seconds is not None


def test_a_resumed_join_keeps_the_call_and_tells_the_other_side_without_peer_joined(call_client, world):
    """A doctor whose signaling socket came back while the call held rejoins with resume: the other
    side hears peer-resumed (keep your connection), not peer-joined (rebuild it); same call record."""
    rural, specialist, consult = world
    a, b = call_client(rural), call_client(specialist)
    first = a.emit("join", {"ref": consult.ref}, namespace="/call", callback=True)
    assert b.emit("join", {"ref": consult.ref}, namespace="/call", callback=True)["ok"]
    a.get_received("/call")
    b.disconnect("/call")  # the specialist's signaling drops
    assert [e["reason"] for e in _events(a, "peer-left")] == ["disconnected"]
    b2 = call_client(specialist)
    ack = b2.emit("join", {"ref": consult.ref, "resume": True}, namespace="/call", callback=True)
    assert ack["ok"] and ack["call_id"] == first["call_id"] and ack["peers"] == [rural.id]
    assert [e["user_id"] for e in _events(a, "peer-resumed")] == [specialist.id]
    assert _events(a, "peer-joined") == []
    # signaling works on the resumed socket
    assert b2.emit("signal", {"ref": consult.ref, "type": "offer", "sdp": OFFER}, namespace="/call",
                   callback=True)["ok"]
    assert _events(a, "signal") == [{"type": "offer", "sdp": OFFER, "from": specialist.id}]


@pytest.mark.parametrize("payload", [
    {"resume": "yes"},
    {"resume": 1},
    {"resume": True, "offer": {"type": "offer", "sdp": OFFER}},
])
def test_a_malformed_resume_gets_an_error_ack_and_joins_nothing(call_client, world, payload):
    rural, specialist, consult = world
    a, b = call_client(rural), call_client(specialist)
    assert a.emit("join", {"ref": consult.ref}, namespace="/call", callback=True)["ok"]
    a.get_received("/call")
    ack = b.emit("join", {"ref": consult.ref, **payload}, namespace="/call", callback=True)
    assert ack["ok"] is False and ack["message"]
    assert _events(a, "peer-resumed") == [] and _events(a, "peer-joined") == []
    assert b.emit("signal", {"ref": consult.ref, "type": "offer", "sdp": OFFER}, namespace="/call",
                  callback=True)["ok"] is False  # not joined


def test_an_old_socket_seen_to_go_after_its_user_resumed_tells_nobody_they_left(call_client, world):
    """The server may notice a dropped socket only at its ping timeout, after the doctor's new socket
    resumed the call: the other side must not then hear that they left."""
    rural, specialist, consult = world
    a, b = call_client(rural), call_client(specialist)
    assert a.emit("join", {"ref": consult.ref}, namespace="/call", callback=True)["ok"]
    assert b.emit("join", {"ref": consult.ref}, namespace="/call", callback=True)["ok"]
    b2 = call_client(specialist)
    assert b2.emit("join", {"ref": consult.ref, "resume": True}, namespace="/call", callback=True)["ok"]
    a.get_received("/call")
    b.disconnect("/call")  # the old socket's end is noticed late
    assert _events(a, "peer-left") == []
    b2.disconnect("/call")  # the doctor's last socket goes: now they left
    assert [e["user_id"] for e in _events(a, "peer-left")] == [specialist.id]
