"""Call setup over /call (Flask-SocketIO test client): the join that carries an offer relays it after
one commit, and ICE candidates travel in batches (the ``candidates`` signal) as well as one by one."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from webapp.extensions import db
from webapp.models import AuditEvent, CallSession, ConsultParticipant, utcnow
from webapp.video import events as call_events
from webapp.video.services import MAX_BATCHED_CANDIDATES

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP 111\r\n"}


def _candidate(n: int, mid: str = "0") -> dict[str, Any]:
    return {"candidate": f"candidate:{n} 1 udp 2122260223 10.0.0.2 {50000 + n} typ host", "sdpMid": mid,
            "sdpMLineIndex": int(mid)}


@pytest.fixture
def world(make):
    rural, specialist = make.rural(), make.specialist()
    return rural, specialist, make.scheduled(rural, specialist)


def _events(client, name):
    return [e["args"][0] for e in client.get_received("/call") if e["name"] == name]


def _join(client, consult, **extra):
    return client.emit("join", {"ref": consult.ref, **extra}, namespace="/call", callback=True)


def _signal(client, consult, **payload):
    return client.emit("signal", {"ref": consult.ref, **payload}, namespace="/call", callback=True)


# --- the join that carries an offer ----------------------------------------------------------------

def test_a_join_with_an_offer_reaches_the_waiting_doctor_after_one_commit_and_leaves_the_call_consistent(
        call_client, world, app):
    rural, specialist, consult = world
    spec, r = call_client(specialist), call_client(rural)
    assert _join(spec, consult)["ok"]
    spec.get_received("/call")

    statements: list[str] = []  # each statement the join sends, in order, and where the offer went
    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)
    relay = call_events.emit

    def relayed(name: str, data: Any, **kw: Any) -> bool:
        if name == "signal":
            statements.append("-- the offer is relayed")
        return relay(name, data, **kw)

    engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    call_events.emit = relayed
    try:
        ack = _join(r, consult, offer=OFFER)
    finally:
        call_events.emit = relay
        event.remove(engine, "before_cursor_execute", count)

    assert ack["ok"] and ack["offered_to"] == specialist.id
    got = spec.get_received("/call")
    assert [e["name"] for e in got] == ["peer-joined", "signal"]  # told who came, then their offer
    joined, offer = got[0]["args"][0], got[1]["args"][0]
    assert joined["user_id"] == rural.id and joined["polite_to"] == {str(specialist.id): False}
    assert offer == {**OFFER, "from": rural.id, "to": specialist.id}
    # the relay follows the join's commit with no database round trip in between, and nothing
    # after it is needed for the acknowledgement either
    at = statements.index("-- the offer is relayed")
    assert statements[at:] == ["-- the offer is relayed"]
    assert sum(1 for s in statements if s.strip().upper().startswith("INSERT INTO AUDIT_EVENTS")) <= 1

    # the state after it: one open call (the one the ack names), the join audited, both in the call
    db.session.expire_all()
    open_calls = db.session.scalars(select(CallSession).where(CallSession.consult_id == consult.id,
                                                              CallSession.ended_at.is_(None))).all()
    assert [c.id for c in open_calls] == [ack["call_id"]]
    joins = db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.consult_id == consult.id, AuditEvent.action == "call.joined", AuditEvent.actor_id == rural.id))
    assert joins == 1
    # (the rural doctor is the polite one of the pair; the specialist learnt the opposite above)
    assert ack["peers"] == [specialist.id] and ack["polite"] is True
    assert ack["polite_to"] == {str(specialist.id): True}
    assert [p["user_id"] for p in ack["people"]] == [specialist.id] and ack["sends"] is True
    assert ack["hands"] == [] and isinstance(ack["ice_servers"], list)
    # the answer goes back to the joiner: it is in the call
    answer = {"type": "answer", "sdp": OFFER["sdp"]}
    assert _signal(spec, consult, to=rural.id, **answer) == {"ok": True, "delivered": True}
    assert _events(r, "signal") == [{**answer, "from": specialist.id, "to": rural.id}]


def test_a_participant_removed_while_their_join_waited_for_its_turn_is_refused_and_relays_nothing(
        call_client, world, app, monkeypatch):
    """The turn judges the membership read inside it, not the one read before waiting."""
    rural, specialist, consult = world
    spec, r = call_client(specialist), call_client(rural)
    assert _join(spec, consult)["ok"]
    spec.get_received("/call")
    real = call_events._join_lock
    consult_id, rural_id = consult.id, rural.id  # (read now: inside the join, no session may open a transaction)

    class RemovedMeanwhile:
        """The turn, taken once another transaction has removed the rural doctor from the consult."""

        def __init__(self, lock: threading.Lock) -> None:
            self.lock = lock

        def __enter__(self) -> None:
            self.lock.acquire()
            with db.engine.begin() as conn:  # another transaction, committed before this join reads again
                conn.execute(update(ConsultParticipant).where(
                    ConsultParticipant.consult_id == consult_id, ConsultParticipant.user_id == rural_id,
                ).values(removed_at=utcnow()))

        def __exit__(self, *exc: object) -> None:
            self.lock.release()

    monkeypatch.setattr(call_events, "_join_lock", lambda consult_id: RemovedMeanwhile(real(consult_id)))
    ack = _join(r, consult, offer=OFFER)
    assert ack["ok"] is False and ack["status"] == 403
    assert spec.get_received("/call") == []  # neither peer-joined nor the offer
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "call.joined", AuditEvent.actor_id == rural.id)) == 0


# --- ICE candidates in batches ------------------------------------------------------------------------

def test_a_batch_of_candidates_goes_only_to_the_named_peer(call_client, team):
    consult, requester, lead, second, _trainee = team
    r, ld, s = call_client(requester), call_client(lead), call_client(second)
    for client in (r, ld, s):
        assert _join(client, consult)["ok"]
    for client in (r, ld, s):
        client.get_received("/call")
    batch = [_candidate(1), _candidate(2), _candidate(3, "1"), None]  # ... and the end of candidates
    assert _signal(r, consult, type="candidates", candidates=batch, to=lead.id) == {"ok": True, "delivered": True}
    assert _events(ld, "signal") == [{"type": "candidates", "candidates": batch, "from": requester.id,
                                      "to": lead.id}]
    assert _events(s, "signal") == [] and _events(r, "signal") == []
    # the single-candidate signal of earlier pages still works
    assert _signal(r, consult, type="candidate", candidate=_candidate(4), to=second.id)["ok"]
    assert _events(s, "signal") == [{"type": "candidate", "candidate": _candidate(4), "from": requester.id,
                                     "to": second.id}]


def test_a_full_batch_is_taken_and_a_larger_one_refused_with_an_error_ack(call_client, world):
    rural, specialist, consult = world
    a, b = call_client(rural), call_client(specialist)
    _join(a, consult)
    _join(b, consult)
    b.get_received("/call")
    full = [_candidate(n) for n in range(MAX_BATCHED_CANDIDATES)]
    assert _signal(a, consult, type="candidates", candidates=full, to=specialist.id)["ok"]
    assert len(_events(b, "signal")[0]["candidates"]) == MAX_BATCHED_CANDIDATES
    ack = _signal(a, consult, type="candidates", candidates=[*full, _candidate(99)], to=specialist.id)
    assert ack["ok"] is False and ack["status"] == 422 and str(MAX_BATCHED_CANDIDATES) in ack["message"]
    assert _events(b, "signal") == []


@pytest.mark.parametrize("candidates", [
    [_candidate(1), {"candidate": "x" * 2000}],  # one bad among good ones: none goes
    [_candidate(1), "not a dict"],
    [{"candidate": "candidate:1", "sdpMLineIndex": "zero"}],
    [{"candidate": "candidate:1", "sdpMid": 7}],
    [{"candidate": "not a candidate line"}],
    [],
    "candidate:1 1 udp 1 10.0.0.2 9 typ host",
    {"candidate": "candidate:1"},
    None,
])
def test_a_malformed_batch_gets_an_error_ack_and_the_handler_keeps_working(call_client, world, candidates):
    rural, specialist, consult = world
    a, b = call_client(rural), call_client(specialist)
    _join(a, consult)
    _join(b, consult)
    b.get_received("/call")
    ack = _signal(a, consult, type="candidates", candidates=candidates, to=specialist.id)
    assert ack["ok"] is False and ack["status"] == 422 and ack["message"]
    assert _events(b, "signal") == []
    assert _signal(a, consult, type="candidates", candidates=[_candidate(1)], to=specialist.id)["ok"]
    assert len(_events(b, "signal")) == 1


def test_a_batch_before_joining_is_refused(call_client, world):
    rural, _specialist, consult = world
    ack = _signal(call_client(rural), consult, type="candidates", candidates=[_candidate(1)])
    assert ack["ok"] is False and "Join" in ack["message"]


def test_a_trainee_whose_leave_to_speak_went_while_their_join_waited_cannot_send_with_it(
        call_client, team, monkeypatch):
    """The offer's media is judged again in the turn: a sending offer from a trainee whose leave to
    speak was withdrawn meanwhile is refused, and nobody receives it."""
    consult, _requester, lead, _second, trainee = team
    sending = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP 111\r\n"
                                      "a=sendrecv\r\n"}
    ld, tr = call_client(lead), call_client(trainee)
    assert _join(ld, consult)["ok"]
    consult_id, trainee_id = consult.id, trainee.id
    with db.engine.begin() as conn:
        conn.execute(update(ConsultParticipant).where(
            ConsultParticipant.consult_id == consult_id, ConsultParticipant.user_id == trainee_id,
        ).values(speech_allowed_at=utcnow()))
    ld.get_received("/call")
    real = call_events._join_lock

    class WithdrawnMeanwhile:
        def __init__(self, lock: threading.Lock) -> None:
            self.lock = lock

        def __enter__(self) -> None:
            self.lock.acquire()
            with db.engine.begin() as conn:
                conn.execute(update(ConsultParticipant).where(
                    ConsultParticipant.consult_id == consult_id, ConsultParticipant.user_id == trainee_id,
                ).values(speech_allowed_at=None))

        def __exit__(self, *exc: object) -> None:
            self.lock.release()

    monkeypatch.setattr(call_events, "_join_lock", lambda cid: WithdrawnMeanwhile(real(cid)))
    ack = _join(tr, consult, offer=sending)
    assert ack["ok"] is False and ack["status"] == 403
    assert _events(ld, "signal") == [] and _events(ld, "peer-joined") == []


def test_a_trainee_left_with_leave_to_speak_from_an_ended_call_cannot_send_into_a_new_one(call_client, team):
    """A new call clears every leave to speak: a trainee's sending offer that comes with the join
    opening that call is judged after the clearing, refused, and the new call record rolled back."""
    consult, requester, _lead, _second, trainee = team
    sending = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP 111\r\n"
                                      "a=sendrecv\r\n"}
    consult_id, trainee_id = consult.id, trainee.id
    with db.engine.begin() as conn:  # granted in an earlier call, which ended without clearing it
        conn.execute(update(ConsultParticipant).where(
            ConsultParticipant.consult_id == consult_id, ConsultParticipant.user_id == trainee_id,
        ).values(speech_allowed_at=utcnow()))
    calls_before = db.session.scalar(select(func.count()).select_from(CallSession))
    tr = call_client(trainee)
    ack = _join(tr, consult, offer=sending)
    assert ack["ok"] is False and ack["status"] == 403, ack
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(CallSession)) == calls_before  # rolled back
    rq = call_client(requester)
    assert _join(rq, consult)["ok"] and _events(rq, "signal") == []
    receiving = {**sending, "sdp": sending["sdp"].replace("a=sendrecv", "a=recvonly")}
    assert _join(tr, consult, offer=receiving)["ok"] is True  # receive-only, as a trainee joins
