"""Booking from the page's script (static/js/book.js): POST /consults/<ref>/book and /reschedule with
Accept: application/json, and GET /consults/<ref>/open-slots to list the times again after a refusal.

The no-script form path is tested in tests/test_http_consults.py and test_http_booking_race.py; this
is the JSON path a loser of a race on one slot takes: refused with the one error handler's JSON,
without a template and without the open slots being listed."""

from __future__ import annotations

from datetime import datetime

import pytest
from flask import template_rendered
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import func, select

from tests.conftest import login
from tests.test_http_badinput import SLOT_CASES, bad_slots
from tests.test_http_consults import consult, flashes, radio_values, reread, token_of, user_client
from tests.test_http_permissions import build_world, client_for, denied_rows, with_team
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import Appointment, ConsultStatus
from webapp.scheduling import services as scheduling

pytestmark = pytest.mark.usefixtures("isolated_requests")

TAKEN = "That time has just been booked for another consult. Choose another time."
JSON = {"Accept": "application/json"}


@pytest.fixture()
def race(app, make):
    """Two rural doctors' accepted consults with one specialist; the second doctor has the booking
    page open (its CSRF token and slots) when the first books the second listed slot."""
    specialist = make.specialist()
    make.availability(specialist)
    first_doctor, second_doctor = make.rural(), make.rural()
    first, second = make.accepted(first_doctor, specialist), make.accepted(second_doctor, specialist)
    first_ref = first.ref
    client = user_client(app, second_doctor)
    page = client.get(f"/consults/{second.ref}/book")
    assert page.status_code == 200
    slots = radio_values(page)
    return {"client": client, "ref": second.ref, "token": token_of(page), "slots": slots,
            "specialist": specialist, "first_doctor": first_doctor, "first_ref": first_ref}


def _post(r: dict, slot: str, *, headers: dict | None = None, token: str | None = None, path: str = "book"):
    return r["client"].post(f"/consults/{r['ref']}/{path}", data={"slot": slot},
                            headers={**JSON, "X-CSRFToken": r["token"] if token is None else token,
                                     **(headers or {})})


def _take(r: dict, slot: str) -> None:
    consults.book(r["first_doctor"], r["first_ref"], datetime.fromisoformat(slot))


def _unbooked(ref: str) -> None:
    c = consult(ref)
    assert c.status == ConsultStatus.ACCEPTED and c.appointment is None


@pytest.fixture()
def templates(app):
    """The names of the templates rendered while the test runs."""
    names: list[str] = []

    def seen(sender, template, context, **extra):
        names.append(template.name)

    template_rendered.connect(seen, app)
    yield names
    template_rendered.disconnect(seen, app)


# --- the winner ---------------------------------------------------------------------------------------


def test_a_json_booking_answers_ok_and_where_to_go_and_stores_the_appointment(race):
    slot = race["slots"][1]
    r = _post(race, slot)
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert r.get_json() == {"ok": True, "redirect": f"/consults/{race['ref']}"}
    c = consult(race["ref"])
    assert c.status == ConsultStatus.SCHEDULED
    assert c.appointment is not None and c.appointment.starts_at.isoformat() == slot
    page = race["client"].get(r.get_json()["redirect"])  # where the script goes: the flash is there
    assert "The consultation time is booked." in flashes(page)


def test_the_token_in_the_form_alone_is_enough_too(race):
    """book.js sends the form's fields (csrf_token among them) and the X-CSRFToken header."""
    r = race["client"].post(f"/consults/{race['ref']}/book", headers=JSON,
                            data={"slot": race["slots"][1], "csrf_token": race["token"]})
    assert r.status_code == 200 and r.get_json()["ok"] is True


# --- the loser ----------------------------------------------------------------------------------------


def test_the_loser_gets_409_json_with_the_message_and_keeps_its_consult_unbooked(race, templates, monkeypatch):
    taken = race["slots"][1]
    _take(race, taken)

    def no_listing(*args, **kwargs):
        raise AssertionError("a refused JSON booking listed the open slots")

    monkeypatch.setattr(scheduling, "open_slots", no_listing)
    r = _post(race, taken)
    assert r.status_code == 409 and r.mimetype == "application/json"
    assert r.get_json() == {"error": "conflict", "message": TAKEN}
    assert templates == [], "a refused JSON booking rendered a template"
    _unbooked(race["ref"])
    assert db.session.scalar(select(func.count()).select_from(Appointment)) == 1  # the winner's


def test_the_loser_is_told_in_chinese(app, race):
    taken = race["slots"][1]
    _take(race, taken)
    r = _post(race, taken, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert r.status_code == 409
    with app.test_request_context(), force_locale("zh_CN"):
        zh = _(TAKEN)
    assert zh != TAKEN and r.get_json()["message"] == zh
    _unbooked(race["ref"])


def test_after_a_refusal_open_slots_lists_the_times_still_open_and_one_of_them_books(race):
    taken = race["slots"][1]
    _take(race, taken)
    assert _post(race, taken).status_code == 409
    r = race["client"].get(f"/consults/{race['ref']}/open-slots", headers=JSON)
    assert r.status_code == 200
    values = [s["value"] for s in r.get_json()["slots"]]
    assert taken not in values and values
    r = _post(race, values[0])
    assert r.status_code == 200 and r.get_json()["ok"] is True
    assert consult(race["ref"]).status == ConsultStatus.SCHEDULED


# --- refused input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "not-a-token"])
def test_without_a_valid_csrf_token_it_is_400_json_and_nothing_is_booked(race, token):
    r = race["client"].post(f"/consults/{race['ref']}/book", data={"slot": race["slots"][1]},
                            headers={**JSON, **({"X-CSRFToken": token} if token else {})})
    assert r.status_code == 400 and r.mimetype == "application/json"
    body = r.get_json()
    assert body["error"] == "csrf_failed" and "Reload the page" in body["message"]
    _unbooked(race["ref"])


@pytest.mark.parametrize("case", [*SLOT_CASES, "empty"])
def test_a_bad_slot_is_4xx_json_with_a_message_and_books_nothing(race, case):
    slot = "" if case == "empty" else bad_slots(race["specialist"])[case]
    r = _post(race, slot)
    assert r.status_code in (400, 409, 422), (r.status_code, r.get_data(as_text=True)[:300])
    body = r.get_json()
    assert body["message"] and body["error"], body
    if case == "empty":
        assert r.status_code == 422 and body["message"] == "Choose a time."
    _unbooked(race["ref"])


def test_booking_a_consult_that_already_has_a_time_is_refused_with_a_message(race):
    assert _post(race, race["slots"][1]).status_code == 200
    r = _post(race, race["slots"][3])
    assert r.status_code == 403 and r.get_json()["message"] == "You cannot book a time for this consult now."
    assert consult(race["ref"]).appointment.starts_at.isoformat() == race["slots"][1]


# --- rescheduling through the same script --------------------------------------------------------------


def test_reschedule_json_moves_the_time_or_says_why_not(race):
    assert _post(race, race["slots"][1]).status_code == 200
    client, ref = race["client"], race["ref"]
    page = client.get(f"/consults/{ref}/reschedule")
    token, choices = token_of(page), radio_values(page)
    r = client.post(f"/consults/{ref}/reschedule", data={"slot": choices[2]},
                    headers={**JSON, "X-CSRFToken": token})
    assert r.status_code == 422 and r.get_json()["message"] == "Give a reason for the new time."
    _take(race, choices[2])  # the other doctor takes the new time first
    r = client.post(f"/consults/{ref}/reschedule", data={"slot": choices[2], "reason": "Clinic day moved."},
                    headers={**JSON, "X-CSRFToken": token})
    assert r.status_code == 409 and r.get_json()["message"] == TAKEN
    assert consult(ref).appointment.starts_at.isoformat() == race["slots"][1], "the old time is kept"
    r = client.post(f"/consults/{ref}/reschedule", data={"slot": choices[4], "reason": "Clinic day moved."},
                    headers={**JSON, "X-CSRFToken": token})
    assert r.status_code == 200 and r.get_json() == {"ok": True, "redirect": f"/consults/{ref}"}
    assert consult(ref).appointment.starts_at.isoformat() == choices[4]


@pytest.mark.parametrize("body", [{"slot": "x", "reason": 5}, {"reason": {"a": 1}}, ["not", "an", "object"], 7])
def test_a_json_body_instead_of_form_fields_is_a_clear_refusal_not_a_500(race, body):
    """book.js posts form fields; a hand-made JSON body (any types) is read as no choice at all."""
    assert _post(race, race["slots"][1]).status_code == 200
    client, ref = race["client"], race["ref"]
    token = token_of(client.get(f"/consults/{ref}/reschedule"))
    for path in ("book", "reschedule"):
        r = client.post(f"/consults/{ref}/{path}", json=body, headers={**JSON, "X-CSRFToken": token})
        assert r.status_code in (403, 422) and r.get_json()["message"], (path, r.status_code, r.get_data()[:200])
    assert consult(ref).appointment.starts_at.isoformat() == race["slots"][1]


# --- open-slots ---------------------------------------------------------------------------------------


def test_open_slots_is_the_list_the_page_shows(race):
    r = race["client"].get(f"/consults/{race['ref']}/open-slots", headers=JSON)
    assert r.status_code == 200 and r.mimetype == "application/json"
    body = r.get_json()
    assert set(body) == {"slots"}
    assert all(set(s) == {"value", "label"} and s["label"] for s in body["slots"])
    assert [s["value"] for s in body["slots"]] == race["slots"]
    reread()
    specialist = race["specialist"]
    assert race["slots"] == [s.starts_at.isoformat()
                             for s in scheduling.open_slots(specialist, days=scheduling.page_days())]


def test_open_slots_labels_are_in_the_viewers_zone(app, make):
    specialist = make.specialist(timezone="Europe/London")
    make.availability(specialist)
    doctor = make.rural(timezone="Asia/Shanghai")
    c = make.accepted(doctor, specialist)
    client = user_client(app, doctor)
    page = client.get(f"/consults/{c.ref}/book").get_data(as_text=True)
    first = client.get(f"/consults/{c.ref}/open-slots", headers=JSON).get_json()["slots"][0]
    assert f'value="{first["value"]}"> {first["label"]}</label>' in page


OPEN_SLOTS_EXPECT = {  # as the book page: parties who book or move the time; others 403, non-parties 404
    "requester": 200, "specialist": 200, "second_specialist": 403, "trainee": 403, "coordinator": 403,
    "other_rural": 404, "other_specialist": 404, "anonymous": 401,
}


@pytest.mark.parametrize("state", ["accepted", "scheduled"])
@pytest.mark.parametrize("actor", list(OPEN_SLOTS_EXPECT))
def test_open_slots_access(app, make, actor, state):
    world = build_world(make)
    c = with_team(world, world.make.accepted(world.requester, world.specialist))
    if state == "scheduled":
        consults.book(world.requester, c.ref, scheduling.open_slots(world.specialist)[1].starts_at)
    ref = c.ref
    client = client_for(app, world, actor)
    denied = len(denied_rows(None, ref))
    r = client.get(f"/consults/{ref}/open-slots", headers=JSON)
    assert r.status_code == OPEN_SLOTS_EXPECT[actor], (r.status_code, r.get_data(as_text=True)[:300])
    assert r.mimetype == "application/json"
    if r.status_code == 200:
        assert r.get_json()["slots"]
    else:
        assert "slots" not in r.get_json() and r.get_json()["message"]
    if r.status_code == 404:
        assert len(denied_rows(world.user(actor), ref)) == 1, "the refusal is audited as on the pages"
    else:
        assert len(denied_rows(None, ref)) == denied


def test_open_slots_without_a_session_from_a_page_goes_to_sign_in(app, make):
    world = build_world(make)
    c = world.make.accepted(world.requester, world.specialist)
    r = app.test_client().get(f"/consults/{c.ref}/open-slots")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")


@pytest.mark.parametrize("path", ["open-slots", "book"])
def test_an_unknown_reference_is_404_json(app, make, path):
    doctor = make.rural()
    client = app.test_client()
    assert login(client, doctor).status_code == 302
    page = client.get("/")
    token = token_of(page)
    if path == "book":
        r = client.post("/consults/AAAAAAAAAAAAAAAA/book", data={"slot": "2030-01-01T10:00:00+00:00"},
                        headers={**JSON, "X-CSRFToken": token})
    else:
        r = client.get("/consults/AAAAAAAAAAAAAAAA/open-slots", headers=JSON)
    assert r.status_code == 404 and r.get_json()["error"] == "not_found"


@pytest.mark.parametrize("actor,status", [("other_rural", 404), ("second_specialist", 403), ("trainee", 403),
                                          ("coordinator", 403), ("anonymous", 401)])
def test_json_booking_by_someone_who_may_not_is_refused_as_on_the_page(app, make, actor, status):
    world = build_world(make)
    c = with_team(world, world.make.accepted(world.requester, world.specialist))
    ref, slot = c.ref, scheduling.open_slots(world.specialist)[1].starts_at.isoformat()
    client = client_for(app, world, actor)
    token = token_of(client.get("/login" if actor == "anonymous" else "/"))
    r = client.post(f"/consults/{ref}/book", data={"slot": slot}, headers={**JSON, "X-CSRFToken": token})
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True)[:300])
    assert r.get_json()["message"]
    _unbooked(ref)
    if status == 404:
        assert len(denied_rows(world.user(actor), ref)) == 1
