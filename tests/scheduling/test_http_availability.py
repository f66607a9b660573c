"""The availability page: every stored window survives a save; rows can be added and removed."""

from __future__ import annotations

from sqlalchemy import select

from tests.conftest import form_values, login
from webapp.demo import WORKDAY_WINDOWS
from webapp.extensions import db
from webapp.models import AvailabilityWindow
from webapp.scheduling import services as scheduling
from webapp.scheduling.services import Window


def stored(specialist) -> list[tuple[int, int, int]]:
    db.session.expire_all()
    return [(w.weekday, w.start_minute, w.end_minute) for w in db.session.scalars(
        select(AvailabilityWindow).where(AvailabilityWindow.specialist_id == specialist.id)
        .order_by(AvailabilityWindow.weekday, AvailabilityWindow.start_minute))]


def signed_in(app, user):
    client = app.test_client()
    assert login(client, user).status_code == 302
    return client


def test_an_unchanged_save_keeps_all_21_demo_windows(app, make):
    specialist = make.specialist()
    scheduling.set_availability(specialist, WORKDAY_WINDOWS)
    before = stored(specialist)
    assert len(before) == 21
    client = signed_in(app, specialist)
    page = client.get("/availability")
    assert page.status_code == 200
    data = form_values(page.get_data(as_text=True))
    r = client.post("/availability", data={**data, "save": "Save availability"})
    assert r.status_code == 302, r.get_data(as_text=True)
    assert stored(specialist) == before


def test_add_a_row_keeps_what_was_typed_and_saves_nothing(app, make):
    specialist = make.specialist()
    scheduling.set_availability(specialist, [Window(0, 9 * 60, 12 * 60)])
    client = signed_in(app, specialist)
    data = form_values(client.get("/availability").get_data(as_text=True))
    rows = {k for k in data if k.endswith("-weekday")}
    data.update({"windows-1-weekday": "2", "windows-1-start": "600", "windows-1-end": "720"})
    r = client.post("/availability", data={**data, "add_row": "Add a row"})
    assert r.status_code == 200
    shown = form_values(r.get_data(as_text=True))
    assert {k for k in shown if k.endswith("-weekday")} == rows | {f"windows-{len(rows)}-weekday"}
    assert shown["windows-1-weekday"] == "2" and shown["windows-1-start"] == "600"
    assert stored(specialist) == [(0, 540, 720)]  # nothing saved yet
    r = client.post("/availability", data={**shown, "save": "Save availability"})
    assert r.status_code == 302
    assert stored(specialist) == [(0, 540, 720), (2, 600, 720)]


def test_remove_drops_only_the_ticked_row(app, make):
    specialist = make.specialist()
    scheduling.set_availability(specialist, [Window(0, 540, 720), Window(1, 540, 720), Window(2, 540, 720)])
    client = signed_in(app, specialist)
    data = form_values(client.get("/availability").get_data(as_text=True))
    assert data["windows-1-weekday"] == "1"
    data["windows-1-remove"] = "y"
    r = client.post("/availability", data={**data, "save": "Save availability"})
    assert r.status_code == 302
    assert stored(specialist) == [(0, 540, 720), (2, 540, 720)]
