"""The /room Socket.IO namespace with the Flask-SocketIO test client: auth, membership, validation."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.conftest import post_form
from webapp.auth import sessions
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import AccountStatus, AuditEvent, Message

NS = "/room"


pytestmark = pytest.mark.usefixtures("generous_chat")


@pytest.fixture
def room(make, sio):
    """A scheduled consult with both parties connected to /room (not yet joined)."""
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    return rural, specialist, consult, sio(rural), sio(specialist)


def events(client, name: str) -> list:
    """The payloads of one event received since the last call (the queue is drained)."""
    # the test client stores a "message" event's single argument unwrapped
    return [e["args"] if e["name"] == "message" else e["args"][0]
            for e in client.get_received(NS) if e["name"] == name]


def all_events(client) -> list[str]:
    return [e["name"] for e in client.get_received(NS)]


def join(client, ref: str, after_seq: int = 0) -> dict:
    ack = client.emit("join", {"ref": ref, "after_seq": after_seq}, namespace=NS, callback=True)
    assert ack["ok"] is True, ack
    return ack


def send(client, ref: str, client_id: str, body: str = "hello", **extra) -> dict:
    return client.emit("send", {"ref": ref, "client_id": client_id, "body": body, **extra},
                       namespace=NS, callback=True)


def assert_error(ack, status: int, error: str | None = None) -> None:
    assert isinstance(ack, dict), ack
    assert ack["ok"] is False and ack["status"] == status, ack
    assert isinstance(ack["message"], str) and ack["message"]
    if error is not None:
        assert ack["error"] == error, ack


def message_count() -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(Message))


def audit(action: str, consult=None) -> list[AuditEvent]:
    db.session.rollback()
    query = select(AuditEvent).where(AuditEvent.action == action)
    if consult is not None:
        query = query.where(AuditEvent.consult_id == consult.id)
    return list(db.session.scalars(query))


# --- authentication ------------------------------------------------------------------------------


def test_connect_without_a_session_is_refused(sio):
    anonymous = sio()
    assert not anonymous.is_connected(NS)


def test_connect_with_a_session_is_accepted(make, sio):
    assert sio(make.rural()).is_connected(NS)


def test_after_logout_the_next_event_is_refused(app, make, sio):
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    browser = app.test_client()
    rural_sock = sio(rural, flask_client=browser)
    specialist_sock = sio(specialist)
    join(rural_sock, consult.ref)
    join(specialist_sock, consult.ref)
    assert send(rural_sock, consult.ref, "before-logout")["ok"] is True
    specialist_sock.get_received(NS)

    # Signed out on another node whose disconnect order never arrived (Redis down): the session is
    # ended in the database only, and every event of the still-open socket is refused.
    sessions.end_all(rural, "logout")
    db.session.commit()
    assert rural_sock.is_connected(NS)
    ack = send(rural_sock, consult.ref, "after-logout-1", "sent with a dead session")
    assert_error(ack, 422)
    assert "session" in ack["message"].lower()
    for event in ("join", "backfill", "typing", "read"):
        refused = rural_sock.emit(event, {"ref": consult.ref, "after_seq": 0, "seq": 1, "typing": True},
                                  namespace=NS, callback=True)
        assert refused["ok"] is False, (event, refused)
    assert message_count() == 1
    assert all_events(specialist_sock) == []  # nothing of the dead session reached the room


def test_logout_disconnects_the_open_socket_at_once(app, make, sio):
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    browser = app.test_client()
    rural_sock = sio(rural, flask_client=browser)
    specialist_sock = sio(specialist)
    join(rural_sock, consult.ref)
    join(specialist_sock, consult.ref)
    specialist_sock.get_received(NS)

    assert post_form(browser, "/logout", token_from="/").status_code == 302
    assert not rural_sock.is_connected(NS), "the signed-out user's socket is closed by the server"
    assert send(specialist_sock, consult.ref, "after-logout-2")["ok"] is True
    assert [p["people"] for p in events(specialist_sock, "presence")][-1] == [
        {"user_id": specialist.id, "name": specialist.full_name, "connections": 1, "role": "lead_specialist"}]


def test_a_suspended_account_is_refused_on_its_next_send(make, room):
    """The send path proves the account in the statement that stores the message: no stale cache."""
    rural, _specialist, consult, rural_sock, specialist_sock = room
    join(rural_sock, consult.ref)
    join(specialist_sock, consult.ref)
    assert send(rural_sock, consult.ref, "before-suspension")["ok"] is True
    specialist_sock.get_received(NS)
    db.session.rollback()
    rural.status = AccountStatus.SUSPENDED
    db.session.commit()
    assert_error(send(rural_sock, consult.ref, "after-suspension"), 422)
    assert message_count() == 1
    assert events(specialist_sock, "message") == []


# --- membership ----------------------------------------------------------------------------------


def test_a_non_party_join_is_refused_audited_and_hears_nothing(make, room, sio):
    rural, specialist, consult, rural_sock, specialist_sock = room
    stranger = make.specialist()
    stranger_sock = sio(stranger)
    join(rural_sock, consult.ref)
    join(specialist_sock, consult.ref)

    ack = stranger_sock.emit("join", {"ref": consult.ref}, namespace=NS, callback=True)
    assert_error(ack, 404, "not_found")
    assert "messages" not in ack and "people" not in ack
    denied = audit("room.access_denied", consult)
    assert [e.actor_id for e in denied] == [stranger.id]
    # an unknown consult gives the very same answer
    unknown = stranger_sock.emit("join", {"ref": "NOSUCHREF"}, namespace=NS, callback=True)
    assert (unknown["status"], unknown["error"], unknown["message"]) == (404, "not_found", ack["message"])

    stranger_sock.get_received(NS)
    assert send(rural_sock, consult.ref, "secret-001", "patient history")["ok"] is True
    rural_sock.emit("typing", {"ref": consult.ref, "typing": True}, namespace=NS, callback=True)
    specialist_sock.emit("read", {"ref": consult.ref, "seq": 1}, namespace=NS, callback=True)
    assert stranger_sock.get_received(NS) == []  # no message, typing, read or presence
    # the stranger is not listed as present and cannot act on the room either
    people = join(specialist_sock, consult.ref)["people"]
    assert {p["user_id"] for p in people} == {rural.id, specialist.id}
    for event, payload in [("send", {"ref": consult.ref, "client_id": "stranger-01", "body": "hi"}),
                           ("backfill", {"ref": consult.ref, "after_seq": 0}),
                           ("typing", {"ref": consult.ref, "typing": True}),
                           ("read", {"ref": consult.ref, "seq": 1})]:
        refused = stranger_sock.emit(event, payload, namespace=NS, callback=True)
        assert_error(refused, 404, "not_found")
        assert "messages" not in refused
    assert len(audit("room.access_denied", consult)) == 1 + 4  # every refused event is audited
    assert message_count() == 1


def test_party_join_is_audited_and_returns_state(room):
    rural, _specialist, consult, rural_sock, _specialist_sock = room
    ack = join(rural_sock, consult.ref)
    assert ack["me"] == rural.id
    assert ack["messages"] == [] and ack["receipts"] == {} and ack["read_only"] is False
    assert [p["user_id"] for p in ack["people"]] == [rural.id]
    assert [e.actor_id for e in audit("room.entered", consult)] == [rural.id]


def test_send_before_join_is_refused(room):
    _, _, consult, rural_sock, specialist_sock = room
    join(specialist_sock, consult.ref)
    specialist_sock.get_received(NS)
    ack = send(rural_sock, consult.ref, "too-early-1")
    assert_error(ack, 422, "invalid_input")
    for event in ("backfill", "typing", "read"):
        refused = rural_sock.emit(event, {"ref": consult.ref, "after_seq": 0, "seq": 0}, namespace=NS,
                                  callback=True)
        assert_error(refused, 422, "invalid_input")
    assert message_count() == 0
    assert all_events(specialist_sock) == []


def test_joining_one_room_does_not_allow_sending_to_another_of_your_consults(make, room):
    rural, specialist, consult, rural_sock, specialist_sock = room
    other = make.scheduled(rural, specialist)
    join(rural_sock, consult.ref)
    assert_error(send(rural_sock, other.ref, "wrong-room-1"), 422)
    # switching rooms leaves the first one: its messages no longer arrive
    join(rural_sock, other.ref)
    join(specialist_sock, consult.ref)
    rural_sock.get_received(NS)
    assert send(specialist_sock, consult.ref, "first-room-1")["ok"] is True
    assert events(rural_sock, "message") == []


def test_coordinator_may_watch_audited_but_not_send(make, room, sio):
    _rural, _specialist, consult, rural_sock, _specialist_sock = room
    coordinator = make.coordinator()
    coord_sock = sio(coordinator)
    join(rural_sock, consult.ref)
    assert send(rural_sock, consult.ref, "for-the-record")["ok"] is True
    ack = join(coord_sock, consult.ref)
    assert [m["body"] for m in ack["messages"]] == ["hello"]
    assert coordinator.id in [e.actor_id for e in audit("room.entered", consult)]
    rural_sock.get_received(NS)
    refused = send(coord_sock, consult.ref, "coordinator-1", "may I?")
    assert_error(refused, 403, "forbidden")
    assert message_count() == 1
    assert events(rural_sock, "message") == []
    # a coordinator looking in sends no read receipt: the parties would take it for the other doctor's
    assert_error(coord_sock.emit("read", {"ref": consult.ref, "seq": 1}, namespace=NS, callback=True), 403)
    assert events(rural_sock, "read") == []
    # the coordinator still sees what the parties write
    coord_sock.get_received(NS)
    assert send(rural_sock, consult.ref, "second-msg-1", "after the coordinator came")["ok"] is True
    assert [m["seq"] for m in events(coord_sock, "message")] == [2]


# --- sending -------------------------------------------------------------------------------------


def test_send_acks_with_the_stored_id_and_the_peer_receives_it(room):
    rural, specialist, consult, rural_sock, specialist_sock = room
    join(rural_sock, consult.ref)
    join(specialist_sock, consult.ref)
    specialist_sock.get_received(NS)
    rural_sock.get_received(NS)

    ack = send(rural_sock, consult.ref, "first-message", "ECG attached shortly")
    assert ack["ok"] is True and ack["duplicate"] is False
    stored = db.session.get(Message, ack["message"]["id"])
    assert stored is not None  # persisted before the ack
    assert (stored.seq, stored.body, stored.sender_id) == (1, "ECG attached shortly", rural.id)
    assert ack["message"]["seq"] == 1 and ack["message"]["client_id"] == "first-message"

    got = events(specialist_sock, "message")
    assert got == [ack["message"]]
    # the sender's other tabs see it too (the sender's own client de-duplicates by seq)
    assert [m["id"] for m in events(rural_sock, "message")] == [ack["message"]["id"]]

    reply = send(specialist_sock, consult.ref, "reply-00001", "Send it please")
    assert reply["message"]["seq"] == 2 and reply["message"]["sender_id"] == specialist.id
    assert [m["body"] for m in events(rural_sock, "message")] == ["Send it please"]


def test_a_retried_send_is_acked_as_duplicate_and_not_broadcast_again(room):
    _, _, consult, rural_sock, specialist_sock = room
    join(rural_sock, consult.ref)
    join(specialist_sock, consult.ref)
    specialist_sock.get_received(NS)
    first = send(rural_sock, consult.ref, "retry-client-1", "BP 180/110")
    retry = send(rural_sock, consult.ref, "retry-client-1", "BP 180/110")
    assert first["ok"] and retry["ok"]
    assert first["duplicate"] is False and retry["duplicate"] is True
    assert retry["message"]["id"] == first["message"]["id"]
    assert retry["message"]["seq"] == first["message"]["seq"] == 1
    assert [m["id"] for m in events(specialist_sock, "message")] == [first["message"]["id"]]
    assert message_count() == 1


def test_backfill_and_join_return_what_came_after_a_sequence(room):
    _, _, consult, rural_sock, specialist_sock = room
    join(rural_sock, consult.ref)
    for i in range(1, 6):
        assert send(rural_sock, consult.ref, f"backfill-{i:03d}", f"m{i}")["ok"]
    ack = join(specialist_sock, consult.ref, after_seq=2)
    assert [m["seq"] for m in ack["messages"]] == [3, 4, 5]
    back = specialist_sock.emit("backfill", {"ref": consult.ref, "after_seq": 4}, namespace=NS, callback=True)
    assert back["ok"] is True and [m["body"] for m in back["messages"]] == ["m5"]
    everything = specialist_sock.emit("backfill", {"ref": consult.ref}, namespace=NS, callback=True)
    assert [m["seq"] for m in everything["messages"]] == [1, 2, 3, 4, 5]


def test_a_closed_consult_room_is_read_only(room):
    rural, _, consult, rural_sock, specialist_sock = room
    join(rural_sock, consult.ref)
    assert send(rural_sock, consult.ref, "before-closing")["ok"]
    consults.cancel(rural, consult.ref, "transferred")
    ack = join(specialist_sock, consult.ref)
    assert ack["read_only"] is True and [m["seq"] for m in ack["messages"]] == [1]
    assert_error(send(specialist_sock, consult.ref, "after-closing"), 403, "forbidden")


# --- history pages -------------------------------------------------------------------------------


def seqs(messages: list[dict]) -> list[int]:
    return [m["seq"] for m in messages]


def test_join_gives_the_latest_page_and_says_older_messages_exist(app, make, room, sio):
    _, _, consult, rural_sock, specialist_sock = room
    make.chat_history(consult, 250)
    assert app.config["CHAT_PAGE_SIZE"] == 100
    ack = join(specialist_sock, consult.ref)
    assert seqs(ack["messages"]) == list(range(151, 251))
    assert (ack["has_more"], ack["more"], ack["last_seq"]) == (True, False, 250)
    assert ack["messages"][-1]["body"] == "history 250" and ack["messages"][-1]["sender_name"]
    # a writer first: the next join (nothing shown yet) is still the latest page, their message last
    join(rural_sock, consult.ref)
    assert send(rural_sock, consult.ref, "after-history-1", "newest")["message"]["seq"] == 251
    again = join(rural_sock, consult.ref)
    assert seqs(again["messages"]) == list(range(152, 252)) and again["has_more"] is True
    # a room that fits in one page: all of it, nothing older
    rural2, specialist2 = make.rural(), make.specialist()
    small = make.scheduled(rural2, specialist2)
    make.chat_history(small, 3)
    whole = join(sio(specialist2), small.ref)
    assert seqs(whole["messages"]) == [1, 2, 3]
    assert (whole["has_more"], whole["more"], whole["last_seq"]) == (False, False, 3)


def test_history_pages_back_to_the_first_message(make, room):
    _, _, consult, _, specialist_sock = room
    make.chat_history(consult, 250)
    ack = join(specialist_sock, consult.ref)
    shown, has_more = seqs(ack["messages"]), ack["has_more"]
    while has_more:
        older = specialist_sock.emit("history", {"ref": consult.ref, "before_seq": shown[0]}, namespace=NS,
                                     callback=True)
        assert older["ok"] is True, older
        assert len(older["messages"]) <= 100
        shown = seqs(older["messages"]) + shown
        has_more = older["has_more"]
    assert shown == list(range(1, 251))  # every message once, in order
    first = specialist_sock.emit("history", {"ref": consult.ref, "before_seq": 1}, namespace=NS, callback=True)
    assert first == {"ok": True, "messages": [], "has_more": False}


def test_a_reconnect_after_a_sequence_pages_forward_until_complete(make, room):
    _, _, consult, _, specialist_sock = room
    make.chat_history(consult, 250)
    ack = join(specialist_sock, consult.ref, after_seq=20)  # came back having shown 1..20
    assert seqs(ack["messages"]) == list(range(21, 121))
    assert (ack["more"], ack["has_more"], ack["last_seq"]) == (True, True, 250)
    shown, more = seqs(ack["messages"]), ack["more"]
    while more:
        page = specialist_sock.emit("backfill", {"ref": consult.ref, "after_seq": shown[-1]}, namespace=NS,
                                    callback=True)
        assert page["ok"] is True and page["last_seq"] == 250, page
        shown += seqs(page["messages"])
        more = page["more"]
    assert shown == list(range(21, 251))
    done = specialist_sock.emit("backfill", {"ref": consult.ref, "after_seq": 250}, namespace=NS, callback=True)
    assert done == {"ok": True, "messages": [], "more": False, "last_seq": 250}


def test_history_payloads_are_validated_and_need_a_joined_room(make, room):
    _, _, consult, rural_sock, specialist_sock = room
    make.chat_history(consult, 5)
    refused = rural_sock.emit("history", {"ref": consult.ref, "before_seq": 5}, namespace=NS, callback=True)
    assert_error(refused, 422, "invalid_input")  # not joined yet
    join(rural_sock, consult.ref)
    for payload in ({"ref": consult.ref}, {"ref": consult.ref, "before_seq": None},
                    {"ref": consult.ref, "before_seq": "5"}, {"ref": consult.ref, "before_seq": -1},
                    {"ref": consult.ref, "before_seq": 2**31}, {"ref": consult.ref, "before_seq": 10**40},
                    {"ref": consult.ref, "before_seq": 2.5}, {"ref": consult.ref, "before_seq": True},
                    {"ref": consult.ref, "before_seq": [3]}, {"before_seq": 3}, [3], "x"):
        ack = rural_sock.emit("history", payload, namespace=NS, callback=True)
        assert_error(ack, 422, "invalid_input")
        assert "before_seq" in ack["message"] or "ref" in ack["message"].lower() or "payload" in ack["message"]
    for event, key in (("join", "after_seq"), ("backfill", "after_seq")):
        for bad in (2**31, 10**40, -1, 1.5, False):
            assert_error(rural_sock.emit(event, {"ref": consult.ref, key: bad}, namespace=NS, callback=True),
                         422, "invalid_input")
    assert_error(rural_sock.emit("history", {"ref": "NOSUCHREF", "before_seq": 3}, namespace=NS, callback=True),
                 404)
    # the connection still works: a valid page, and nothing reached the other party
    ok = rural_sock.emit("history", {"ref": consult.ref, "before_seq": 3}, namespace=NS, callback=True)
    assert ok == {"ok": True, "messages": ok["messages"], "has_more": False} and seqs(ok["messages"]) == [1, 2]
    assert all_events(specialist_sock) == []


def test_a_non_party_gets_no_history(make, room, sio):
    _, _, consult, _, _ = room
    make.chat_history(consult, 5)
    outsider = sio(make.rural())
    ack = outsider.emit("history", {"ref": consult.ref, "before_seq": 6}, namespace=NS, callback=True)
    assert_error(ack, 404)
    assert "messages" not in ack


# --- validation ----------------------------------------------------------------------------------


def test_malformed_payloads_get_error_acks_and_nothing_else_is_disturbed(app, make, room, sio):
    _rural, _specialist, consult, rural_sock, specialist_sock = room
    # another consult, its own parties, in its own room
    rural2, specialist2 = make.rural(), make.specialist()
    other = make.scheduled(rural2, specialist2)
    other_a, other_b = sio(rural2), sio(specialist2)
    join(other_a, other.ref)
    join(other_b, other.ref)
    for c in (rural_sock, specialist_sock):
        join(c, consult.ref)
    for c in (rural_sock, specialist_sock, other_a, other_b):
        c.get_received(NS)

    huge = "x" * (app.config["SOCKET_MAX_PAYLOAD_BYTES"] + 1)
    bad_sends = [
        ("not an object", 422),
        (["a", "list"], 422),
        (42, 422),
        (None, 422),
        ({"ref": consult.ref, "client_id": "huge-payload", "body": huge}, 422),
        ({"ref": consult.ref, "client_id": "nested-huge", "body": "x", "extra": [huge]}, 422),
        ({"client_id": "missing-ref", "body": "where to?"}, 422),
        ({"ref": None, "client_id": "null-ref-01", "body": "x"}, 422),
        ({"ref": ["x"], "client_id": "list-ref-01", "body": "x"}, 422),
        ({"ref": "x" * 5000, "client_id": "long-ref-01", "body": "x"}, 422),
        ({"ref": consult.ref, "body": "no client id"}, 422),
        ({"ref": consult.ref, "client_id": 12345678, "body": "x"}, 422),
        ({"ref": consult.ref, "client_id": "bad id!", "body": "x"}, 422),
        ({"ref": consult.ref, "client_id": "typed-body", "body": {"html": "<b>"}}, 422),
        ({"ref": consult.ref, "client_id": "number-body", "body": 12}, 422),
        ({"ref": consult.ref, "client_id": "empty-body", "body": "   "}, 422),
        ({"ref": consult.ref, "client_id": "too-long-body", "body": "y" * (app.config["CHAT_MAX_CHARS"] + 1)},
         422),
        ({"ref": consult.ref, "client_id": "bad-attach", "body": "x", "attachment_id": "1"}, 422),
        ({"ref": consult.ref, "client_id": "missing-attach", "body": "x", "attachment_id": 999999}, 422),
        ({"ref": "NOSUCHREF", "client_id": "unknown-ref", "body": "x"}, 404),
    ]
    for payload, status in bad_sends:
        ack = rural_sock.emit("send", payload, namespace=NS, callback=True)
        assert_error(ack, status)
    # malformed payloads to the other events too
    for event, payload in [("join", "x"), ("join", {"ref": 7}), ("join", {"ref": consult.ref, "after_seq": "z"}),
                           ("join", {"ref": consult.ref, "after_seq": -1}),
                           ("backfill", {"ref": consult.ref, "after_seq": "1"}), ("backfill", [1]),
                           ("read", {"ref": consult.ref, "seq": "3"}), ("read", {"ref": consult.ref}),
                           ("read", {"ref": consult.ref, "seq": -5}), ("typing", None),
                           ("typing", {"typing": True})]:
        assert_error(rural_sock.emit(event, payload, namespace=NS, callback=True), 422)
    # extra positional arguments get an error ack too (not a TypeError without any ack)
    surplus = rural_sock.emit("send", {"ref": consult.ref, "client_id": "surplus-args", "body": "x"}, "surplus",
                              namespace=NS, callback=True)
    assert_error(surplus, 422)
    # an unknown event is ignored and does not break the connection
    rural_sock.emit("no_such_event", {"ref": consult.ref}, namespace=NS)
    assert rural_sock.is_connected(NS)

    assert message_count() == 0
    assert events(specialist_sock, "message") == []
    assert all_events(other_a) == [] and all_events(other_b) == []

    # a failed join (bad after_seq) did not drop the sender from its room; a valid send still works
    ack = send(rural_sock, consult.ref, "valid-after-1", "still here")
    assert ack["ok"] is True and ack["message"]["seq"] == 1
    assert [m["body"] for m in events(specialist_sock, "message")] == ["still here"]
    # the other room works and never saw any of it
    ack2 = send(other_a, other.ref, "other-room-1", "independent")
    assert ack2["ok"] is True and ack2["message"]["seq"] == 1
    assert [m["body"] for m in events(other_b, "message")] == ["independent"]
    assert events(specialist_sock, "message") == []


def test_a_flood_is_rate_limited_without_affecting_other_senders(app, make, room, sio, monkeypatch):
    _rural, _specialist, consult, rural_sock, specialist_sock = room
    monkeypatch.setitem(app.config, "CHAT_MESSAGES_PER_SECOND", 3)
    rural2, specialist2 = make.rural(), make.specialist()
    other = make.scheduled(rural2, specialist2)
    other_a, other_b = sio(rural2), sio(specialist2)
    join(other_a, other.ref)
    join(other_b, other.ref)
    join(rural_sock, consult.ref)
    join(specialist_sock, consult.ref)
    for c in (specialist_sock, other_b):
        c.get_received(NS)

    acks = [send(rural_sock, consult.ref, f"flood-{i:04d}", f"flood {i}") for i in range(6)]
    assert [a["ok"] for a in acks[:3]] == [True, True, True]
    refused = [a for a in acks[3:] if not a["ok"]]
    assert refused, acks
    for ack in refused:
        assert_error(ack, 429, "rate_limited")
    stored = 6 - len(refused)
    assert message_count() == stored
    assert len(events(specialist_sock, "message")) == stored
    # the other party and another room keep working
    assert send(specialist_sock, consult.ref, "peer-still-ok")["ok"] is True
    assert send(other_a, other.ref, "other-room-ok")["ok"] is True
    assert [m["client_id"] for m in events(other_b, "message")] == ["other-room-ok"]



def test_an_out_of_order_send_gets_an_error_ack_with_the_last_number_and_is_not_broadcast(room):
    _rural, _specialist, consult, rural_sock, specialist_sock = room
    join(rural_sock, consult.ref)
    join(specialist_sock, consult.ref)
    assert send(rural_sock, consult.ref, "order-0001", "first", client_seq=1)["ok"] is True
    assert send(rural_sock, consult.ref, "order-0003", "third", client_seq=3)["ok"] is True
    specialist_sock.get_received(NS)
    ack = send(rural_sock, consult.ref, "order-0002", "second, late", client_seq=2)
    assert_error(ack, 409, "out_of_order")
    assert ack["last_client_seq"] == 3  # the browser renumbers its outbox after this
    assert events(specialist_sock, "message") == []
    assert message_count() == 2
    retry = send(rural_sock, consult.ref, "order-0001", "first", client_seq=4)  # a lost ack: no refusal
    assert retry["ok"] is True and retry["duplicate"] is True and retry["message"]["seq"] == 1
    assert_error(send(rural_sock, consult.ref, "order-0009", "x", client_seq="9"), 422, "invalid_input")
    assert_error(send(rural_sock, consult.ref, "order-0009", "x", client_seq=2**31), 422, "invalid_input")
    assert_error(send(rural_sock, consult.ref, "order-0009", "x", waited_ms=-5), 422, "invalid_input")


def test_a_reconnect_flush_larger_than_the_per_second_limit_is_stored_in_order(app, room, monkeypatch):
    _rural, _specialist, consult, rural_sock, specialist_sock = room
    monkeypatch.setitem(app.config, "CHAT_MESSAGES_PER_SECOND", 3)
    join(rural_sock, consult.ref)
    join(specialist_sock, consult.ref)
    specialist_sock.get_received(NS)
    acks = [send(rural_sock, consult.ref, f"backlog-{n:04d}", f"offline {n}", client_seq=n, waited_ms=20_000)
            for n in range(1, 11)]
    assert [a["ok"] for a in acks] == [True] * 10, acks
    assert [m["body"] for m in events(specialist_sock, "message")] == [f"offline {n}" for n in range(1, 11)]
    # a live flood is still limited
    flood = [send(rural_sock, consult.ref, f"live-{n:04d}", "live", client_seq=10 + n, waited_ms=0)
             for n in range(1, 6)]
    assert_error(flood[-1], 429, "rate_limited")


# --- presence, typing, read receipts -------------------------------------------------------------


def test_presence_lists_both_parties_and_updates_on_leave(room):
    rural, specialist, consult, rural_sock, specialist_sock = room
    join(rural_sock, consult.ref)
    rural_sock.get_received(NS)
    ack = join(specialist_sock, consult.ref)
    both = [{"user_id": rural.id, "name": rural.full_name, "connections": 1, "role": "requester"},
            {"user_id": specialist.id, "name": specialist.full_name, "connections": 1, "role": "lead_specialist"}]
    assert ack["people"] == sorted(both, key=lambda p: p["user_id"])
    assert events(rural_sock, "presence")[-1]["people"] == ack["people"]

    specialist_sock.disconnect(NS)
    assert events(rural_sock, "presence")[-1]["people"] == [
        {"user_id": rural.id, "name": rural.full_name, "connections": 1, "role": "requester"}]


def test_typing_reaches_the_other_party_only(room):
    rural, _specialist, consult, rural_sock, specialist_sock = room
    join(rural_sock, consult.ref)
    join(specialist_sock, consult.ref)
    rural_sock.get_received(NS)
    specialist_sock.get_received(NS)
    assert rural_sock.emit("typing", {"ref": consult.ref, "typing": True}, namespace=NS, callback=True) == {"ok": True}
    assert events(specialist_sock, "typing") == [{"user_id": rural.id, "name": rural.full_name, "typing": True}]
    assert events(rural_sock, "typing") == []
    rural_sock.emit("typing", {"ref": consult.ref, "typing": False}, namespace=NS, callback=True)
    assert events(specialist_sock, "typing")[0]["typing"] is False


def test_read_receipts_reach_the_room_and_only_move_forward(room):
    _rural, specialist, consult, rural_sock, specialist_sock = room
    join(rural_sock, consult.ref)
    join(specialist_sock, consult.ref)
    for i in range(3):
        send(rural_sock, consult.ref, f"to-read-{i:03d}", f"m{i}")
    rural_sock.get_received(NS)
    ack = specialist_sock.emit("read", {"ref": consult.ref, "seq": 3}, namespace=NS, callback=True)
    assert ack == {"ok": True, "seq": 3}
    assert events(rural_sock, "read") == [{"user_id": specialist.id, "seq": 3}]
    late = specialist_sock.emit("read", {"ref": consult.ref, "seq": 1}, namespace=NS, callback=True)
    assert late == {"ok": True, "seq": 3}
    assert events(rural_sock, "read") == [{"user_id": specialist.id, "seq": 3}]
    # a later join carries the receipts
    assert join(rural_sock, consult.ref)["receipts"] == {str(specialist.id): 3}


def _counting_request_contexts(app, monkeypatch) -> list[int]:
    pushed: list[int] = []
    real = app.request_context

    def counting(environ):
        pushed.append(1)
        return real(environ)

    monkeypatch.setattr(app, "request_context", counting)
    return pushed


def test_a_plain_message_is_stored_and_relayed_without_a_request_context(app, room, monkeypatch):
    """The lean send path: an app context only (no session decoding, no user loaded) for a plain
    text message; anything else (here an attachment the fast path cannot take) the ordinary way."""
    _, _, consult, rural_sock, specialist_sock = room
    join(rural_sock, consult.ref)
    join(specialist_sock, consult.ref)
    specialist_sock.get_received(NS)
    pushed = _counting_request_contexts(app, monkeypatch)
    ack = send(rural_sock, consult.ref, "lean-00001", "Troponin pending")
    assert ack["ok"] is True and ack["duplicate"] is False and ack["message"]["seq"] == 1
    assert pushed == []  # no request context for the whole send
    assert [m["body"] for m in events(specialist_sock, "message")] == ["Troponin pending"]
    retry = send(rural_sock, consult.ref, "lean-00001", "Troponin pending")  # undecided: the full path answers
    assert retry["duplicate"] is True and retry["message"]["id"] == ack["message"]["id"] and pushed
    assert events(specialist_sock, "message") == []  # a retry is not relayed twice
    pushed.clear()
    refused = send(rural_sock, consult.ref, "lean-00002", "with a file", attachment_id=999)
    assert_error(refused, 422, "invalid_input")
    assert pushed  # the ordinary handler, in a request context
    assert message_count() == 1


def test_a_send_refused_by_the_lean_path_is_answered_in_the_senders_language(app, room, monkeypatch):
    rural, _, consult, rural_sock, specialist_sock = room
    rural.locale = "zh_CN"
    db.session.commit()
    monkeypatch.setitem(app.config, "SOCKET_RATE_LIMITS", {**app.config["SOCKET_RATE_LIMITS"],
                                                           "/room send": "1 per minute"})
    join(rural_sock, consult.ref)
    join(specialist_sock, consult.ref)
    assert send(rural_sock, consult.ref, "zh-000001", "第一条")["ok"] is True
    refused = send(rural_sock, consult.ref, "zh-000002", "第二条")
    assert_error(refused, 429, "rate_limited")
    assert any("\u4e00" <= ch <= "\u9fff" for ch in refused["message"]), refused  # in Chinese
    assert message_count() == 1


def test_socket_events_leave_no_routing_exception_for_the_garbage_collector(app, room):
    """Flask-SocketIO runs events in a request context for /socket.io/: without a route for that
    URL every event kept a NotFound and its traceback on the request (~70 objects in reference
    cycles, freed only by the collector, whose stalls delay everyone's messages)."""
    import gc

    from flask import request

    with app.test_request_context("/socket.io/?EIO=4&transport=websocket"):
        assert request.routing_exception is None and request.url_rule.endpoint == "socketio_transport"
    with app.test_request_context("/socket.io"):  # the test client's form, without the slash
        assert request.routing_exception is None
    assert app.test_client().get("/socket.io/").status_code != 200  # the middleware answers, not a page
    _, _, consult, rural_sock, _ = room
    join(rural_sock, consult.ref)
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(20):
            rural_sock.emit("typing", {"ref": consult.ref, "typing": True}, namespace=NS, callback=True)
        gc.collect()
        garbage = list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()
    # Other threads of the test process (servers left by earlier tests, a 404 page they serve) may
    # make garbage of their own meanwhile, so the check is on what a Socket.IO event left: no request
    # context of the transport's URL in a reference cycle (its routing exception's traceback held it).
    # (Alone, an event leaves 8 objects: werkzeug's matcher makes a recursive closure per match.)
    from flask.ctx import RequestContext

    left = [o for o in garbage if isinstance(o, RequestContext) and o.request.path.startswith("/socket.io")]
    assert left == [], f"{len(left)} Socket.IO request contexts in reference cycles after 20 events"


def test_a_message_owing_a_notification_is_counted_once_against_the_event_limit(app, room, monkeypatch):
    """The lean path counts the event before asking who is away; the full path it hands over to
    (the message and its notification in one transaction) does not count it again."""
    _, _specialist, consult, rural_sock, _ = room
    monkeypatch.setitem(app.config, "SOCKET_RATE_LIMITS", {**app.config["SOCKET_RATE_LIMITS"],
                                                           "/room send": "2 per minute"})
    join(rural_sock, consult.ref)  # the specialist is away: each message may owe him a notification
    assert send(rural_sock, consult.ref, "away-00001", "first")["ok"] is True
    assert send(rural_sock, consult.ref, "away-00002", "second")["ok"] is True  # counted once each
    assert_error(send(rural_sock, consult.ref, "away-00003", "third"), 429, "rate_limited")
    assert message_count() == 2
