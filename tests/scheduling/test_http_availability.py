"""The availability page: every stored window survives a save; rows can be added and removed."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from tests.conftest import form_values, login, post_form
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


def test_leave_and_extra_hours_from_the_page(app, make):
    specialist = make.specialist(timezone="Europe/Berlin")
    scheduling.set_availability(specialist, [Window(d, 9 * 60, 10 * 60) for d in range(7)])
    client = signed_in(app, specialist)
    tomorrow = (datetime.now(ZoneInfo("Europe/Berlin")) + timedelta(days=2)).date()
    before = len(scheduling.open_slots(specialist, days=7))

    r = post_form(client, "/availability/leave", {"first_day": tomorrow.isoformat(),
                  "last_day": tomorrow.isoformat(), "note": "Conference"}, token_from="/availability")
    assert r.status_code == 302
    r = post_form(client, "/availability/extra", {"day": tomorrow.isoformat(), "start": "1200",
                  "end": "1260"}, token_from="/availability")
    assert r.status_code == 302
    page = client.get("/availability").get_data(as_text=True)
    assert f"Leave {tomorrow.isoformat()}" in page and "Conference" in page
    assert f"Extra hours {tomorrow.isoformat()} 20:00–21:00" in page
    assert len(scheduling.open_slots(specialist, days=7)) == before - 2  # leave wins over extra hours

    leave = next(x for x in scheduling.exceptions_of(specialist) if x.kind == "leave")
    r = post_form(client, f"/availability/exceptions/{leave.id}/delete", token_from="/availability")
    assert r.status_code == 302
    assert len(scheduling.open_slots(specialist, days=7)) == before + 2


@pytest.mark.parametrize(("path", "data"), [
    ("/availability/leave", {"first_day": "2027-04-02", "last_day": "2027-04-01"}),
    ("/availability/leave", {"first_day": "soon", "last_day": "2027-04-01"}),
    ("/availability/leave", {}),
    ("/availability/extra", {"day": "2027-04-01", "start": "600", "end": "540"}),
    ("/availability/extra", {"day": "2027-04-01", "start": "abc", "end": "540"}),
    ("/availability/extra", {"day": "", "start": "600", "end": "660"}),
])
def test_bad_exceptions_are_refused_with_a_message(app, make, path, data):
    specialist = make.specialist()
    client = signed_in(app, specialist)
    r = post_form(client, path, data, token_from="/availability")
    assert r.status_code in (400, 422), r.status_code
    assert 'class="errors"' in r.get_data(as_text=True) or "flash" in r.get_data(as_text=True)
    assert scheduling.exceptions_of(specialist) == []


def test_removing_someone_elses_exception_is_404(app, make):
    owner, other = make.specialist(), make.specialist()
    leave = scheduling.add_leave(owner, date(2027, 4, 1), date(2027, 4, 2))
    client = signed_in(app, other)
    r = post_form(client, f"/availability/exceptions/{leave.id}/delete", token_from="/availability")
    assert r.status_code == 404
    assert len(scheduling.exceptions_of(owner)) == 1


def test_remove_after_adding_a_row(app, make):
    specialist = make.specialist()
    scheduling.set_availability(specialist, WORKDAY_WINDOWS)
    client = signed_in(app, specialist)
    data = form_values(client.get("/availability").get_data(as_text=True))
    r = client.post("/availability", data={**data, "add_row": "Add a row"})
    shown = form_values(r.get_data(as_text=True))
    shown["windows-0-remove"] = "y"
    r = client.post("/availability", data={**shown, "save": "Save availability"})
    assert r.status_code == 302
    assert len(stored(specialist)) == 20
