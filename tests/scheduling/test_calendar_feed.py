"""The private iCalendar feed: stable UID, SEQUENCE on reschedule, CANCELLED, no clinical text."""

from __future__ import annotations

import re

from icalendar import Calendar
from sqlalchemy import select

from tests.conftest import login, post_form
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import Appointment, CalendarFeed
from webapp.scheduling import calendar as feeds
from webapp.scheduling import services as scheduling

COMPLAINT = "Crushing retrosternal pain radiating to the jaw"
HISTORY = "Diabetic, smoker, previous stent in the LAD"


def signed_in(app, user):
    client = app.test_client()
    assert login(client, user).status_code == 302
    return client


def feed_url(client) -> str:
    r = post_form(client, "/calendar/feed", token_from="/calendar")
    assert r.status_code == 200
    match = re.search(r'value="(http[^"]+\.ics)"', r.get_data(as_text=True))
    assert match, "the new feed address is shown once"
    return match.group(1).removeprefix("http://localhost")


def events(client, path: str) -> dict[str, dict]:
    r = client.get(path)
    assert r.status_code == 200 and r.mimetype == "text/calendar"
    raw = r.get_data(as_text=True)
    assert COMPLAINT not in raw and HISTORY not in raw and "Chest" not in raw
    cal = Calendar.from_ical(r.get_data())
    return {str(e["UID"]): e for e in cal.walk("VEVENT")}


def test_the_feed_follows_booking_reschedule_and_cancel(app, make):
    requester, specialist = make.rural(name="Dr Ma Xiaoli"), make.specialist(timezone="Europe/Berlin")
    consult = make.scheduled(requester, specialist, chief_complaint=COMPLAINT, history=HISTORY)
    [first] = db.session.scalars(select(Appointment).where(Appointment.consult_id == consult.id)).all()
    client = signed_in(app, requester)
    path = feed_url(client)
    anonymous = app.test_client()  # a calendar application: no session

    [(uid, event)] = events(anonymous, path).items()
    assert uid == f"consult-{consult.ref}@huizhen"
    assert event["SEQUENCE"] == 0 and str(event["STATUS"]) == "CONFIRMED"
    assert str(event["SUMMARY"]) == "Huizhen consultation"
    assert event.decoded("DTSTART") == first.starts_at and event.decoded("DTEND") == first.ends_at
    assert f"/consults/{consult.ref}" in str(event["URL"])
    assert requester.full_name not in str(event.to_ical())

    new_start = next(s.starts_at for s in scheduling.open_slots(specialist) if s.starts_at > first.starts_at)
    consults.reschedule(specialist, consult.ref, new_start, "Clinic overrun")
    [(uid2, event)] = events(anonymous, path).items()
    assert uid2 == uid and event["SEQUENCE"] == 1 and event.decoded("DTSTART") == new_start
    assert "Clinic overrun" not in str(event.to_ical())

    consults.cancel(requester, consult.ref, "Patient transferred to the provincial hospital")
    [(uid3, event)] = events(anonymous, path).items()
    assert uid3 == uid and event["SEQUENCE"] == 2 and str(event["STATUS"]) == "CANCELLED"
    assert "transferred" not in str(event.to_ical())

    # the specialist's own feed shows the same consult under the same UID
    specialist_path = feed_url(signed_in(app, specialist))
    assert set(events(anonymous, specialist_path)) == {uid}


def test_a_revoked_or_replaced_url_is_404_and_only_the_hash_is_stored(app, make):
    requester = make.rural()
    client = signed_in(app, requester)
    path = feed_url(client)
    token = path.rsplit("/", 1)[1].removesuffix(".ics")
    [stored] = db.session.scalars(select(CalendarFeed)).all()
    assert stored.token_hash != token and token not in stored.token_hash and len(stored.token_hash) == 64
    assert app.test_client().get(path).status_code == 200

    newer = feed_url(client)  # a new address replaces the old one
    assert app.test_client().get(path).status_code == 404
    assert app.test_client().get(newer).status_code == 200

    r = post_form(client, "/calendar/feed/revoke", token_from="/calendar")
    assert r.status_code == 302
    assert app.test_client().get(newer).status_code == 404
    assert app.test_client().get("/calendar/not-a-token.ics").status_code == 404
    db.session.expire_all()
    assert feeds.feed_of(requester) is None


def test_a_feed_without_bookings_is_an_empty_calendar(app, make):
    client = signed_in(app, make.specialist())
    path = feed_url(client)
    assert events(app.test_client(), path) == {}
