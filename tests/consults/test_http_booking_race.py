"""The loser's page: a slot taken by another consult while the booking page was open."""

from __future__ import annotations

from datetime import datetime

import pytest
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import func, select

from tests.test_http_consults import consult, flashes, radio_values, token_of, user_client
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import Appointment, ConsultOffer, ConsultStatus
from webapp.scheduling import services as scheduling

pytestmark = pytest.mark.usefixtures("isolated_requests")

ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}
TAKEN = "That time has just been booked for another consult. Choose another time."


@pytest.fixture()
def race(app, make):
    """Two rural doctors' accepted consults with one specialist; the second doctor has the booking
    page open when the first books the second listed slot."""
    specialist = make.specialist()
    make.availability(specialist)
    first_doctor, second_doctor = make.rural(), make.rural()
    first, second = make.accepted(first_doctor, specialist), make.accepted(second_doctor, specialist)
    client = user_client(app, second_doctor)
    page = client.get(f"/consults/{second.ref}/book")
    assert page.status_code == 200
    taken = radio_values(page)[1]
    consults.book(first_doctor, first.ref, datetime.fromisoformat(taken))
    return client, second.ref, token_of(page), taken, specialist


def _unchanged(ref: str) -> None:
    c = consult(ref)
    assert c.status == ConsultStatus.ACCEPTED and c.appointment is None
    assert [o.status.value for o in db.session.scalars(select(ConsultOffer).where(
        ConsultOffer.consult_id == c.id))] == ["accepted"]
    assert db.session.scalar(select(func.count()).select_from(Appointment)) == 1  # the winner's


def test_the_loser_gets_409_with_the_slot_taken_message_and_the_times_still_open(race):
    client, ref, token, taken, specialist = race
    r = client.post(f"/consults/{ref}/book", data={"csrf_token": token, "slot": taken})
    assert r.status_code == 409
    assert TAKEN in flashes(r)
    values = radio_values(r)
    assert taken not in values, "the slot just taken is no longer offered"
    open_now = [s.starts_at.isoformat() for s in scheduling.open_slots(specialist)]
    assert values == open_now and values, "the page lists the times still open, to choose another"
    _unchanged(ref)

    # choosing another listed time from that page books it
    r = client.post(f"/consults/{ref}/book", data={"csrf_token": token_of(r), "slot": values[0]})
    assert r.status_code == 302
    assert consult(ref).status == ConsultStatus.SCHEDULED


def test_the_loser_is_told_in_chinese(app, race):
    client, ref, token, taken, _specialist = race
    r = client.post(f"/consults/{ref}/book", headers=ZH, data={"csrf_token": token, "slot": taken})
    assert r.status_code == 409
    with app.test_request_context(), force_locale("zh_CN"):
        zh = _(TAKEN)
    assert zh != TAKEN and zh in flashes(r)
    _unchanged(ref)


def test_a_script_gets_the_refusal_as_json(race):
    client, ref, token, taken, _specialist = race
    r = client.post(f"/consults/{ref}/book", headers={"Accept": "application/json"},
                    data={"csrf_token": token, "slot": taken})
    assert r.status_code == 409
    assert r.get_json() == {"error": "conflict", "message": TAKEN}
    _unchanged(ref)
