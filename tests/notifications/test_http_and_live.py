"""The bell, the list page, mark read, preferences (HTTP), and live delivery on /notify (Socket.IO)."""

from __future__ import annotations

import re

from tests.conftest import login, post_form
from tests.notifications.conftest import notifications_of
from webapp.extensions import db
from webapp.notifications import services as notifications


def test_bell_counts_unread_on_every_page_and_list_links_to_the_consult(app, make):
    rural, spec = make.rural(), make.specialist()
    consult = make.requested(rural)
    client = app.test_client()
    login(client, spec)
    page = client.get("/").get_data(as_text=True)
    assert re.search(r'id="notify-count"[^>]*>1<', page)
    listing = client.get("/notifications").get_data(as_text=True)
    assert f'href="/consults/{consult.ref}"' in listing and "request in Cardiology offered to you" in listing


def test_the_waiting_notification_links_straight_to_the_room(app, make):
    rural, spec = make.rural(), make.specialist()
    consult = make.accepted(rural, spec)
    notifications.notify([rural], "room.waiting", {"by": spec.full_name}, consult=consult)
    db.session.commit()
    client = app.test_client()
    login(client, rural)
    assert f'href="/consults/{consult.ref}/room"' in client.get("/notifications").get_data(as_text=True)


def test_mark_one_and_all_read(app, make):
    rural, spec = make.rural(), make.specialist()
    make.requested(rural)
    make.requested(rural)
    first = notifications_of(spec)[0]
    client = app.test_client()
    login(client, spec)
    assert post_form(client, f"/notifications/{first.id}/read", token_from="/notifications").status_code == 302
    assert notifications.unread_count(spec.id) == 1
    assert post_form(client, "/notifications/read-all", token_from="/notifications").status_code == 302
    assert notifications.unread_count(spec.id) == 0
    assert client.get("/notifications/unread").get_json() == {"unread": 0}


def test_marking_someone_elses_notification_is_404(app, make):
    rural, spec = make.rural(), make.specialist()
    make.requested(rural)
    note = notifications_of(spec)[0]
    client = app.test_client()
    login(client, rural)
    assert post_form(client, f"/notifications/{note.id}/read", token_from="/notifications").status_code == 404
    assert post_form(client, "/notifications/99999999999/read", token_from="/notifications").status_code == 404
    db.session.expire_all()
    assert notifications_of(spec)[0].read_at is None


def test_preferences_saved_and_bad_quiet_hours_refused(app, make):
    spec = make.specialist()
    client = app.test_client()
    login(client, spec)
    r = post_form(client, "/notifications/preferences", {"muted": ["email:chat.message"],
                  "quiet_start": "22:00", "quiet_end": "07:00"}, token_from="/notifications/preferences")
    assert r.status_code == 302
    pref = notifications.preferences_of(spec)
    assert (pref.muted, pref.quiet_start, pref.quiet_end) == (["email:chat.message"], 22 * 60, 7 * 60)
    r = post_form(client, "/notifications/preferences", {"quiet_start": "22:00"},
                  token_from="/notifications/preferences")
    assert r.status_code == 422 and "both ends" in r.get_data(as_text=True)
    r = post_form(client, "/notifications/preferences", {"muted": ["sms:nothing"]},
                  token_from="/notifications/preferences")
    assert r.status_code == 422


def test_a_new_offer_arrives_live_on_the_specialists_channel(make, party_socket):
    rural, spec, other = make.rural(), make.specialist(), make.rural()
    spec_socket, other_socket = party_socket(spec, "/notify"), party_socket(other, "/notify")
    spec_socket.get_received("/notify")
    make.requested(rural)
    got = [p for p in spec_socket.get_received("/notify") if p["name"] == "notification"]
    assert len(got) == 1
    payload = got[0]["args"][0]
    assert payload["unread"] == 1 and payload["notification"]["kind"] == "consult.offered"
    assert payload["notification"]["link"].startswith("/consults/")
    assert other_socket.get_received("/notify") == []
    ack = spec_socket.emit("count", {}, namespace="/notify", callback=True)
    assert ack == {"ok": True, "unread": 1}


def test_no_live_event_for_a_rolled_back_change(make, party_socket, failing_commit):
    import pytest

    from tests.notifications.conftest import CommitFailed
    from webapp.consults import services as consults

    rural, spec = make.rural(), make.specialist()
    draft = make.draft(rural)
    spec_socket = party_socket(spec, "/notify")
    spec_socket.get_received("/notify")
    with failing_commit(), pytest.raises(CommitFailed):
        consults.submit(rural, draft.ref)
    consults.update_case(rural, draft.ref, make.case())  # a later commit does not send the dropped one
    assert spec_socket.get_received("/notify") == []


def test_chat_while_away_notifies_the_absent_party_once(make, party_socket, generous_chat):
    rural, spec = make.rural(), make.specialist()
    consult = make.accepted(rural, spec)
    rural_bell = party_socket(rural, "/notify")
    room = party_socket(spec, "/room", consult.ref)
    for n in range(3):
        ack = room.emit("send", {"ref": consult.ref, "client_id": f"client-{n:04d}", "body": "BP 180/110, please call"},
                        namespace="/room", callback=True)
        assert ack["ok"], ack
    [note] = notifications_of(rural, "chat.message")
    assert note.params["by"] == spec.full_name and "BP" not in str(note.params)
    got = [p for p in rural_bell.get_received("/notify") if p["name"] == "notification"]
    assert [p["args"][0]["notification"]["link"] for p in got] == [f"/consults/{consult.ref}/room"]
    party_socket(rural, "/room", consult.ref)  # now he is in the room: no notification for him
    room.emit("send", {"ref": consult.ref, "client_id": "client-last", "body": "here?"}, namespace="/room",
              callback=True)
    assert notifications_of(spec, "chat.message") == []
