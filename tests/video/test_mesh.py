"""The call with more than two (/call, Flask-SocketIO test client): signals relayed pairwise by `to`,
politeness per pair, the caps on senders and people, and a trainee's raised hand and leave to speak."""

from __future__ import annotations

from sqlalchemy import select

from tests.conftest import login
from webapp.consults import policy
from webapp.extensions import db
from webapp.models import AuditEvent, CallSession, Consult

OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
SENDING = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP 111\r\na=sendrecv\r\n"
RECEIVING = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP 111\r\na=recvonly\r\n"


def _events(client, name):
    return [e["args"][0] for e in client.get_received("/call") if e["name"] == name]


def _join(client, consult, **extra):
    return client.emit("join", {"ref": consult.ref, **extra}, namespace="/call", callback=True)


def _fresh(consult: Consult) -> Consult:
    db.session.expire_all()
    return db.session.scalar(select(Consult).where(Consult.ref == consult.ref))


def test_three_in_a_call_signal_pairwise_and_each_pair_knows_who_is_polite(call_client, team):
    consult, requester, lead, second, _trainee = team
    r, ld, s = call_client(requester), call_client(lead), call_client(second)
    assert _join(r, consult)["ok"]
    ack_lead = _join(ld, consult, offer={"type": "offer", "sdp": OFFER})
    # two people: the join's offer goes to the one other, as in the two-party call
    assert ack_lead["offered_to"] == requester.id and ack_lead["polite_to"] == {str(requester.id): False}
    assert _events(r, "signal") == [{"type": "offer", "sdp": OFFER, "from": lead.id, "to": requester.id}]
    ack = _join(s, consult, offer={"type": "offer", "sdp": OFFER})
    # three: nobody takes the join's offer; the newcomer offers to each on its own
    assert ack["offered_to"] is None
    assert {p["user_id"]: p["role"] for p in ack["people"]} == {requester.id: "requester", lead.id: "lead_specialist"}
    assert all(p["sends"] for p in ack["people"])
    c = _fresh(consult)
    assert ack["polite_to"] == {str(requester.id): policy.is_polite(second, c, requester.id),
                                str(lead.id): policy.is_polite(second, c, lead.id)}
    assert ack["polite_to"] == {str(requester.id): False, str(lead.id): True}  # lead, specialist, requester
    joined_r, joined_l = _events(r, "peer-joined"), _events(ld, "peer-joined")
    assert joined_r[-1]["user_id"] == second.id and joined_r[-1]["role"] == "specialist"
    # each member learns its own politeness towards the newcomer: the opposite of the newcomer's
    assert joined_r[-1]["polite_to"][str(requester.id)] is True and joined_l[-1]["polite_to"][str(lead.id)] is False
    assert _events(r, "signal") == [] and _events(ld, "signal") == []

    assert s.emit("signal", {"ref": consult.ref, "type": "offer", "sdp": OFFER, "to": lead.id},
                  namespace="/call", callback=True) == {"ok": True, "delivered": True}
    assert _events(ld, "signal") == [{"type": "offer", "sdp": OFFER, "from": second.id, "to": lead.id}]
    assert _events(r, "signal") == []  # only the target hears it
    candidate = {"candidate": "candidate:1 1 udp 2122260223 10.0.0.2 50000 typ host", "sdpMid": "0",
                 "sdpMLineIndex": 0}
    assert r.emit("signal", {"ref": consult.ref, "type": "candidate", "candidate": candidate, "to": second.id},
                  namespace="/call", callback=True)["ok"]
    assert _events(s, "signal")[0]["candidate"] == candidate and _events(ld, "signal") == []


def test_the_call_record_stays_open_while_two_others_still_talk_and_closes_with_the_pair(call_client, team):
    consult, requester, lead, second, _trainee = team
    r, ld, s = call_client(requester), call_client(lead), call_client(second)
    for c in (r, ld, s):
        assert _join(c, consult)["ok"]

    def open_calls() -> list[CallSession]:
        db.session.expire_all()
        return list(db.session.scalars(select(CallSession).where(CallSession.consult_id == consult.id,
                                                                 CallSession.ended_at.is_(None))))

    first = open_calls()
    assert len(first) == 1
    assert s.emit("leave", {"ref": consult.ref}, namespace="/call", callback=True)["ok"]
    assert [c.id for c in open_calls()] == [first[0].id]  # the requester and the lead talk on
    assert ld.emit("leave", {"ref": consult.ref}, namespace="/call", callback=True)["ok"]
    assert open_calls() == []  # the requester waits alone: the call ended, as a two-party call does
    ended = db.session.get(CallSession, first[0].id)
    assert ended.ended_at is not None


def test_a_signal_to_someone_not_in_the_call_is_not_delivered_and_a_bad_target_is_refused(call_client, team):
    consult, requester, lead, second, _trainee = team
    r, ld = call_client(requester), call_client(lead)
    _join(r, consult), _join(ld, consult)
    assert r.emit("signal", {"ref": consult.ref, "type": "offer", "sdp": OFFER, "to": second.id},
                  namespace="/call", callback=True) == {"ok": True, "delivered": False}
    for bad in ("7", True, -1, {"id": 1}):
        ack = r.emit("signal", {"ref": consult.ref, "type": "offer", "sdp": OFFER, "to": bad},
                     namespace="/call", callback=True)
        assert ack["ok"] is False and ack["status"] == 422 and "to" in ack["message"]
    assert r.emit("signal", {"ref": consult.ref, "type": "bye"}, namespace="/call", callback=True)["ok"]


def test_a_sender_beyond_the_cap_is_refused_with_the_message_a_trainee_still_joins(app, monkeypatch, call_client,
                                                                                   make, team):
    consult, requester, lead, second, trainee = team
    third, fourth = make.second_specialist(consult), make.second_specialist(consult)
    monkeypatch.setitem(app.config, "CALL_MAX_SENDERS", 3)
    clients = [call_client(u) for u in (requester, lead, second)]
    for c in clients:
        assert _join(c, consult)["ok"]
    for extra in (third, fourth):  # the fourth and fifth sender
        ack = _join(call_client(extra), consult)
        assert ack["ok"] is False and ack["status"] == 409 and ack["error"] == "call_full"
        assert ack["message"] == ("This call already has 3 people on camera and microphone, the most it allows. "
                                  "You can join once someone leaves.")
    assert _join(call_client(trainee), consult)["ok"]  # receive-only: counts only in the total
    # another tab of someone already in the call is no newcomer
    assert _join(call_client(lead), consult)["ok"]
    # one sender hangs up: a place is free
    assert clients[2].emit("leave", {"ref": consult.ref}, namespace="/call", callback=True)["ok"]
    assert _join(call_client(third), consult)["ok"]


def test_the_total_cap_counts_receive_only_trainees_and_is_said_in_chinese(app, monkeypatch, call_client, make,
                                                                            team):
    consult, requester, lead, second, trainee = team
    monkeypatch.setitem(app.config, "CALL_MAX_PARTICIPANTS", 3)
    for u in (requester, lead, trainee):
        assert _join(call_client(u), consult)["ok"]
    ack = _join(call_client(second), consult)
    assert ack["ok"] is False and ack["error"] == "call_full" and "3 people are in it" in ack["message"]
    second.locale = "zh_CN"
    db.session.commit()
    ack = _join(call_client(second), consult)
    assert ack["ok"] is False and ack["message"].startswith("本次通话已满：已有 3 人")


def test_default_caps_four_senders_six_people():
    from config import Config

    assert Config.CALL_MAX_SENDERS == 4 and Config.CALL_MAX_PARTICIPANTS == 6


def test_a_trainee_joins_receive_only_and_a_sending_description_is_refused(call_client, team):
    consult, requester, _lead, _second, trainee = team
    r, tr = call_client(requester), call_client(trainee)
    _join(r, consult)
    ack = _join(tr, consult, offer={"type": "offer", "sdp": SENDING})
    assert ack["ok"] is False and ack["status"] == 403 and "receive-only" in ack["message"]
    ack = _join(tr, consult, offer={"type": "offer", "sdp": RECEIVING})
    assert ack["ok"] and ack["sends"] is False and ack["offered_to"] == requester.id
    refused = tr.emit("signal", {"ref": consult.ref, "type": "answer", "sdp": SENDING, "to": requester.id},
                      namespace="/call", callback=True)
    assert refused["ok"] is False and refused["status"] == 403
    assert tr.emit("signal", {"ref": consult.ref, "type": "answer", "sdp": RECEIVING, "to": requester.id},
                   namespace="/call", callback=True)["ok"]
    joined = _events(r, "peer-joined")
    assert joined[-1]["role"] == "trainee" and joined[-1]["sends"] is False


def test_a_raised_hand_reaches_the_lead_who_lets_the_trainee_speak_and_withdraws_it(call_client, team):
    consult, _requester, lead, second, trainee = team
    ld, s, tr = call_client(lead), call_client(second), call_client(trainee)
    for c in (ld, s, tr):
        assert _join(c, consult)["ok"]
    for c in (ld, s, tr):
        c.get_received("/call")
    assert tr.emit("raise_hand", {"ref": consult.ref}, namespace="/call", callback=True)["ok"]
    hands = _events(ld, "hands")[-1]["hands"]
    assert hands == [{"user_id": trainee.id, "name": trainee.full_name, "raised": True, "allowed": False}]
    # only the lead lets someone speak; only a trainee raises a hand
    for who, event, payload in ((s, "allow_speech", {"user_id": trainee.id}), (ld, "raise_hand", {}),
                                (tr, "allow_speech", {"user_id": trainee.id})):
        ack = who.emit(event, {"ref": consult.ref, **payload}, namespace="/call", callback=True)
        assert ack["ok"] is False and ack["status"] == 403
    for bad in ({"user_id": second.id}, {"user_id": "x"}, {"user_id": trainee.id, "allow": "yes"}):
        ack = ld.emit("allow_speech", {"ref": consult.ref, **bad}, namespace="/call", callback=True)
        assert ack["ok"] is False and ack["status"] == 422

    assert ld.emit("allow_speech", {"ref": consult.ref, "user_id": trainee.id, "allow": True},
                   namespace="/call", callback=True)["ok"]
    assert _events(tr, "hands")[-1]["hands"] == [{"user_id": trainee.id, "name": trainee.full_name,
                                                  "raised": False, "allowed": True}]
    c = _fresh(consult)
    assert policy.allows(trainee, c, policy.Action.SEND_MEDIA)
    assert tr.emit("signal", {"ref": consult.ref, "type": "offer", "sdp": SENDING, "to": lead.id},
                   namespace="/call", callback=True)["ok"]  # their microphone now
    assert db.session.scalar(select(AuditEvent).where(AuditEvent.consult_id == consult.id,
                                                      AuditEvent.action == "call.speech_allowed")) is not None

    assert ld.emit("allow_speech", {"ref": consult.ref, "user_id": trainee.id, "allow": False},
                   namespace="/call", callback=True)["ok"]
    assert _events(tr, "hands")[-1]["hands"] == []
    refused = tr.emit("signal", {"ref": consult.ref, "type": "offer", "sdp": SENDING, "to": lead.id},
                      namespace="/call", callback=True)
    assert refused["ok"] is False and refused["status"] == 403
    # a hand raised and then the trainee hangs up: it is lowered for everyone
    tr.emit("raise_hand", {"ref": consult.ref, "raised": True}, namespace="/call", callback=True)
    assert tr.emit("leave", {"ref": consult.ref}, namespace="/call", callback=True)["ok"]
    assert _events(ld, "hands")[-1]["hands"] == []


def test_the_room_page_gives_a_trainee_the_call_receive_only_and_the_lead_the_hands(app, make):
    requester, lead = make.rural(), make.specialist()
    consult = make.accepted(requester, lead)
    trainee = make.trainee(consult)
    pages = {}
    for who in (trainee, lead):
        client = app.test_client()
        login(client, who)
        page = client.get(f"/consults/{consult.ref}/room")
        assert page.status_code == 200
        pages[who.id] = page.get_data(as_text=True)
    watching, leading = pages[trainee.id], pages[lead.id]
    assert 'data-sends="false"' in watching and "receive-only" in watching
    assert ">Join the call to watch and listen<" in watching
    assert 'data-can-allow="false"' in watching and 'id="call-hand"' in watching
    assert 'data-sends="true"' in leading and 'data-can-allow="true"' in leading and ">Join call<" in leading


def test_a_removed_participant_leaves_the_call_as_removed_and_the_others_close_to_them(call_client, team):
    """Removal closes the removed person's call socket; the others hear "removed" (their pages close
    the connection to them at once), not "disconnected" (which waits for a return)."""
    import time

    from webapp.consults import participants

    consult, requester, lead, second, _trainee = team
    r, ld, s = call_client(requester), call_client(lead), call_client(second)
    for c in (r, ld, s):
        assert _join(c, consult)["ok"]
    r.get_received("/call")
    participants.remove(requester, consult.ref, second.id)
    deadline = time.monotonic() + 10  # the re-check runs as a background task, off the request
    left = []
    while not left and time.monotonic() < deadline:
        left = [e for e in _events(r, "peer-left") if e["user_id"] == second.id]
        time.sleep(0.05)
    assert left == [{"user_id": second.id, "reason": "removed"}]
    assert not s.is_connected("/call")


def test_a_trainees_leave_to_speak_ends_with_their_connection_and_with_the_call(call_client, team):
    consult, requester, lead, _second, trainee = team
    r, ld, tr = call_client(requester), call_client(lead), call_client(trainee)
    for c in (r, ld, tr):
        assert _join(c, consult)["ok"]
    assert ld.emit("allow_speech", {"ref": consult.ref, "user_id": trainee.id, "allow": True},
                   namespace="/call", callback=True)["ok"]
    ld.get_received("/call")
    tr.disconnect("/call")  # a closed tab: no hang-up
    got = ld.get_received("/call")
    assert [e["args"][0] for e in got if e["name"] == "hands"][-1]["hands"] == []
    assert [e["args"][0] for e in got if e["name"] == "peer-left"] == [{"user_id": trainee.id,
                                                                         "reason": "disconnected"}]
    assert not policy.allows(trainee, _fresh(consult), policy.Action.SEND_MEDIA)

    # a hand raised in one call is not carried into the next call
    tr2 = call_client(trainee)
    assert _join(tr2, consult)["ok"]
    assert tr2.emit("raise_hand", {"ref": consult.ref}, namespace="/call", callback=True)["ok"]
    for c in (r, ld, tr2):
        assert c.emit("leave", {"ref": consult.ref}, namespace="/call", callback=True)["ok"]
    assert _join(call_client(requester), consult)["ok"]  # a new call record
    assert _fresh(consult).participants and all(
        p.hand_raised_at is None and p.speech_allowed_at is None for p in _fresh(consult).participants)


def test_only_a_trainee_in_the_call_is_let_to_speak_and_a_speaker_counts_as_a_sender(app, monkeypatch,
                                                                                       call_client, team):
    consult, requester, lead, second, trainee = team
    ld = call_client(lead)
    assert _join(ld, consult)["ok"]
    ack = ld.emit("allow_speech", {"ref": consult.ref, "user_id": trainee.id, "allow": True},
                  namespace="/call", callback=True)
    assert ack["ok"] is False and ack["status"] == 422 and "in the call" in ack["message"]
    monkeypatch.setitem(app.config, "CALL_MAX_SENDERS", 3)
    for u in (requester, second, trainee):
        assert _join(call_client(u), consult)["ok"]
    ack = ld.emit("allow_speech", {"ref": consult.ref, "user_id": trainee.id, "allow": True},
                  namespace="/call", callback=True)
    assert ack["ok"] is False and ack["error"] == "call_full"  # three already send


def test_a_hand_raised_twice_is_announced_once(call_client, team):
    consult, _requester, lead, _second, trainee = team
    ld, tr = call_client(lead), call_client(trainee)
    for c in (ld, tr):
        assert _join(c, consult)["ok"]
    ld.get_received("/call")
    for _ in range(3):
        assert tr.emit("raise_hand", {"ref": consult.ref, "raised": True}, namespace="/call", callback=True)["ok"]
    assert len(_events(ld, "hands")) == 1
