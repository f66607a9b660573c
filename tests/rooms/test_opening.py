"""The room opens ROOM_OPENS_MINUTES_BEFORE the booked time; a written answer works at any time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from tests.conftest import login, post_form
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import Appointment, Consult
from webapp.rooms import services as rooms
from webapp.scheduling import services as scheduling
from webapp.timefmt import format_local

# America/New_York springs forward at 02:00 local on Sunday 14 March 2027 (EST -> EDT).
AFTER_JUMP = datetime(2027, 3, 14, 7, 0, tzinfo=UTC)  # 03:00 EDT; 15 minutes earlier is 01:45 EST


@pytest.fixture
def opening_15(app, monkeypatch):
    monkeypatch.setitem(app.config, "ROOM_OPENS_MINUTES_BEFORE", 15)


@pytest.fixture
def later(make, opening_15):
    """A consult booked at least two hours ahead (its room is not open yet)."""
    requester = make.rural(timezone="Europe/Berlin")
    specialist = make.specialist(timezone="America/New_York")
    make.availability(specialist)
    consult = make.accepted(requester, specialist)
    slot = next(s for s in scheduling.open_slots(specialist)
                if s.starts_at > datetime.now(UTC) + timedelta(hours=2))
    consults.book(requester, consult.ref, slot.starts_at)
    return requester, specialist, consult, slot.starts_at


def move_booking_to(consult: Consult, starts_at: datetime) -> None:
    db.session.execute(update(Appointment).where(Appointment.consult_id == consult.id)
                       .values(starts_at=starts_at, ends_at=starts_at + timedelta(minutes=30)))
    db.session.commit()
    db.session.expire_all()


def test_the_room_opens_15_minutes_before_across_the_dst_change(later):
    requester, specialist, consult, _ = later
    move_booking_to(consult, AFTER_JUMP)
    consult = db.session.get(Consult, consult.id)
    assert rooms.opens_at(consult) == datetime(2027, 3, 14, 6, 45, tzinfo=UTC)

    with pytest.raises(rooms.RoomNotOpen) as refused:
        rooms.check_open(specialist, consult, now=datetime(2027, 3, 14, 6, 44, 59, tzinfo=UTC))
    assert "01:45 EST (America/New_York)" in refused.value.message  # the wall clock before the jump
    with pytest.raises(rooms.RoomNotOpen) as refused:
        rooms.check_open(requester, consult, now=datetime(2027, 3, 13, 12, tzinfo=UTC))
    assert "07:45 CET (Europe/Berlin)" in refused.value.message  # the viewer's own zone
    rooms.check_open(specialist, consult, now=datetime(2027, 3, 14, 6, 45, tzinfo=UTC))
    rooms.check_open(specialist, consult, now=datetime(2027, 3, 14, 9, tzinfo=UTC))  # stays open after


def test_an_unbooked_consult_room_is_open_at_once(make, opening_15):
    consult = make.accepted(make.rural(), make.specialist())
    assert rooms.opens_at(consult) is None


def test_the_room_page_says_when_it_opens_and_the_answer_still_works(app, later):
    requester, specialist, consult, starts_at = later
    opening = starts_at - timedelta(minutes=15)
    for user in (requester, specialist):
        client = app.test_client()
        assert login(client, user).status_code == 302
        r = client.get(f"/consults/{consult.ref}/room")
        assert r.status_code == 403
        page = r.get_data(as_text=True)
        assert format_local(opening, user.timezone) in page, page
        assert 'id="chat' not in page
        view = client.get(f"/consults/{consult.ref}").get_data(as_text=True)
        assert 'id="room-opens"' in view and f"/consults/{consult.ref}/room" not in view
    app.config["ROOM_OPENS_MINUTES_BEFORE"] = 24 * 60  # now inside the opening window
    assert client.get(f"/consults/{consult.ref}/room").status_code == 200
    app.config["ROOM_OPENS_MINUTES_BEFORE"] = 15

    r = client.get(f"/consults/{consult.ref}/answer")
    assert r.status_code == 200
    r = post_form(client, f"/consults/{consult.ref}/answer",
                  {"assessment": "Stable angina", "plan": "Aspirin, statin, refer for stress test",
                   "sign": "Sign and send"}, token_from=f"/consults/{consult.ref}/answer")
    assert r.status_code == 302
    db.session.expire_all()
    assert db.session.get(Consult, consult.id).recommendation.is_signed


@pytest.mark.parametrize("namespace", ["/room", "/call"])
def test_socket_join_is_refused_with_the_opening_time(app, party_socket, later, namespace):
    requester, _specialist, consult, starts_at = later
    client = party_socket(requester, namespace)
    ack = client.emit("join", {"ref": consult.ref}, namespace=namespace, callback=True)
    assert ack["ok"] is False and ack["error"] == "room_not_open", ack
    assert format_local(starts_at - timedelta(minutes=15), requester.timezone) in ack["message"]

    app.config["ROOM_OPENS_MINUTES_BEFORE"] = 24 * 60
    ack = client.emit("join", {"ref": consult.ref}, namespace=namespace, callback=True)
    assert ack and ack.get("ok"), ack
