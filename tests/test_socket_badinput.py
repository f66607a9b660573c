"""Values that used to crash a handler (a ``server_error`` ack or a 500) are clear validation errors.

Found by fuzzing (issue 8, item 8): NUL and lone surrogates in ``ref``/``body``/SDP, and integers
beyond 2³¹ (PostgreSQL's INTEGER) or 2⁶³ (SQLite's) in ``after_seq``, ``seq`` and
``attachment_id``. Each is refused with a 422 ``invalid_input`` acknowledgement (or response)
naming the problem, and nothing is stored. Run on SQLite and on PostgreSQL (TEST_DATABASE_URL).
"""

from __future__ import annotations

import math

import pytest
from sqlalchemy import func, select

from tests.conftest import csrf_token, login
from webapp.errors import ValidationFailed
from webapp.extensions import db
from webapp.models import CallSession, Message, NoteUpdate
from webapp.notes import state as notes_state
from webapp.validation import check_payload, clean_int, clean_text

OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
BIG = [2**31, 2**63, 10**20]


@pytest.fixture
def consult(app, make, generous_chat):
    notes_state.reset(app)
    rural, specialist = make.rural(), make.specialist()
    return make.scheduled(rural, specialist)


def parties(consult):
    return consult.requester, consult.specialist


def stored() -> tuple[int, int, int]:
    db.session.rollback()
    return tuple(db.session.scalar(select(func.count()).select_from(model))
                 for model in (Message, NoteUpdate, CallSession))


def assert_invalid(ack) -> None:
    assert isinstance(ack, dict), ack
    assert ack["ok"] is False, ack
    assert (ack["error"], ack["status"]) == ("invalid_input", 422), ack
    assert ack["message"]


ROOM_CASES = [
    ("join", {"ref": "\x00"}), ("join", {"ref": "\ud800"}), ("join", {"ref": "R\x00"}),
    *[("join", {"ref": "R", "after_seq": n}) for n in BIG],
    *[("backfill", {"ref": "R", "after_seq": n}) for n in BIG],
    *[("read", {"ref": "R", "seq": n}) for n in BIG],
    *[("send", {"ref": "R", "client_id": "client-0001", "body": "x", "attachment_id": n}) for n in BIG],
    ("send", {"ref": "R", "client_id": "client-0002", "body": "nul \x00 in the text"}),
    ("send", {"ref": "R", "client_id": "client-0003", "body": "lone \ud800 surrogate"}),
    ("send", {"ref": "R", "client_id": "client-0004", "body": "\udfff"}),
    ("send", {"ref": "R\x00", "client_id": "client-0005", "body": "x"}),
    ("typing", {"ref": "\x00", "typing": True}), ("typing", {"ref": "R", "typing": "\ud800"}),
    ("read", {"ref": "\ud800", "seq": 1}),
    ("backfill", {"ref": "R", "after_seq": 1, "extra": {"\x00": 1}}),
    ("backfill", {"ref": "R", "after_seq": 1, "extra": [math.inf]}),
]
NOTES_CASES = [
    ("join", {"ref": "\ud800"}), ("join", {"ref": "\x00"}), ("sync", {"ref": "R\x00"}),
    ("update", {"ref": "R", "update": "AA\x00=="}), ("update", {"ref": "R", "update": "\ud800"}),
    ("focus", {"ref": "R", "section": "\ud800", "cursor": None}),
    ("focus", {"ref": "R", "section": "plan", "cursor": "abc\x00"}),
]
CALL_CASES = [
    ("join", {"ref": "\ud800"}), ("join", {"ref": "R", "offer": {"type": "offer", "sdp": OFFER + "a=\ud800\r\n"}}),
    ("signal", {"ref": "R", "type": "offer", "sdp": OFFER + "a=x\ud800\r\n"}),
    ("signal", {"ref": "R", "type": "answer", "sdp": OFFER + "a=\x00\r\n"}),
    ("signal", {"ref": "R", "type": "candidate",
                "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host\x00", "sdpMid": "0"}}),
    ("signal", {"ref": "R", "type": "candidate",
                "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "\ud800"}}),
    ("signal", {"ref": "R", "type": "candidate",
                "candidate": {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 2**63}}),
    ("stats", {"ref": "R", "rtt_ms": 2**63}), ("stats", {"ref": "R", "setup_ms": math.nan}),
    ("state", {"ref": "R\ud800", "muted": True}),
]


def _fill(payload: dict, ref: str) -> dict:
    return {key: (ref + value[1:] if isinstance(value, str) and value.startswith("R") and key == "ref" else value)
            for key, value in payload.items()}


@pytest.mark.parametrize(("namespace", "event", "payload"),
                         [("/room", e, p) for e, p in ROOM_CASES] + [("/notes", e, p) for e, p in NOTES_CASES]
                         + [("/call", e, p) for e, p in CALL_CASES])
def test_bad_socket_values_are_invalid_not_server_errors(party_socket, consult, namespace, event, payload):
    rural, _ = parties(consult)
    client = party_socket(rural, namespace, consult.ref)
    before = stored()
    ack = client.emit(event, _fill(payload, consult.ref), namespace=namespace, callback=True)
    assert_invalid(ack)
    assert stored() == before
    ok = client.emit("join", {"ref": consult.ref}, namespace=namespace, callback=True)
    assert ok["ok"], ok  # the connection still works afterwards


def test_valid_values_at_the_edges_still_work(party_socket, consult):
    rural, _ = parties(consult)
    room = party_socket(rural, "/room", consult.ref)
    sent = room.emit("send", {"ref": consult.ref, "client_id": "client-edge1", "body": "emoji 🩺 ok"},
                     namespace="/room", callback=True)
    assert sent["ok"] and sent["message"]["body"] == "emoji 🩺 ok", sent
    back = room.emit("backfill", {"ref": consult.ref, "after_seq": 2**31 - 1}, namespace="/room", callback=True)
    assert back["ok"] and back["messages"] == [] and back["more"] is False, back
    read = room.emit("read", {"ref": consult.ref, "seq": 2**31 - 1}, namespace="/room", callback=True)
    assert read == {"ok": True, "seq": 1}


@pytest.mark.parametrize("sdp", [OFFER + "a=\ud800\r\n", OFFER + "a=\x00\r\n", OFFER + "a=\udc00x\r\n"])
def test_precall_offer_with_bad_text_is_422(app, client, make, sdp):
    login(client, make.rural())
    token = csrf_token(client, "/precall")
    r = client.post("/precall/offer", json={"type": "offer", "sdp": sdp},
                    headers={"X-CSRFToken": token, "Accept": "application/json"})
    assert r.status_code == 422, (r.status_code, r.get_data(as_text=True)[:200])
    assert r.get_json()["error"] == "invalid_input" and r.get_json()["message"]


# --- the shared validators -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["\x00", "a\ud800b", "\udfff", {"k": ["\x00"]}, {"\ud800": 1}, 2**53,
                                   -(2**60), math.nan, -math.inf, [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]], object()])
def test_check_payload_refuses_what_nothing_can_store(value):
    with pytest.raises(ValidationFailed):
        check_payload({"x": value})


def test_check_payload_accepts_ordinary_json():
    check_payload({"ref": "abc", "body": "多语言 🩺\n\ttext", "n": 2**53 - 1, "f": 1.5, "l": [None, True, b"x"]})


def test_clean_int_and_clean_text():
    assert clean_int(None, "n", default=0) == 0
    assert clean_int(2**31 - 1, "n") == 2**31 - 1
    for bad in (2**31, -1, True, 1.0, "1"):
        with pytest.raises(ValidationFailed) as exc:
            clean_int(bad, "n")
        assert exc.value.fields == {"n": "invalid"}
    assert clean_text("ok\n", "t", max_len=3) == "ok\n"
    for bad in ("long", "\x07", "\x00", "\ud800", 5):
        with pytest.raises(ValidationFailed):
            clean_text(bad, "t", max_len=3)
