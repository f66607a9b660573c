"""Bad input never produces a 500, and never changes what is already stored.

Wrong types, out-of-range numbers, oversized text, unknown choices and ids, unreadable or
unbookable slot values, and expired or tampered sessions all get a 4xx with a message; the
consult is reloaded afterwards and compared field by field.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, inspect, select

from tests.conftest import CSRF_RE, PASSWORD, csrf_token, login, post_form
from webapp.extensions import db
from webapp.models import AuditEvent, Consult, ConsultStatus, Facility, Partnership, User
from webapp.scheduling import services as scheduling

BLANK_CASE = {
    "specialty": "cardiology", "urgency": "urgent", "patient_age_years": "60", "patient_sex": "male",
    "chief_complaint": "Chest pain", "history": "Three weeks of exertional chest pain.",
    "findings": "ST depression V4-V6", "current_treatment": "", "question": "Angiography?",
    "preferred_times": "", "bp_systolic": "", "bp_diastolic": "", "heart_rate": "",
    "respiratory_rate": "", "temperature_c": "", "spo2": "", "weight_kg": "",
}


def reread() -> None:
    db.session.rollback()
    db.session.expire_all()


def columns(model, row_id) -> dict:
    """Every column of a stored row, freshly read."""
    reread()
    row = db.session.get(model, row_id)
    return {attr.key: getattr(row, attr.key) for attr in inspect(model).column_attrs}


def message(response) -> str:
    body = response.get_data(as_text=True)
    found = re.findall(r'<p class="lede">(.*?)</p>|<div class="flash [a-z]+" role="status">(.*?)</div>'
                       r'|<ul class="errors"><li>(.*?)</li>', body)
    return html.unescape(" | ".join(a or b or c for a, b, c in found))


def not_500(response) -> None:
    assert response.status_code < 500, (response.status_code, message(response))


@pytest.fixture
def world(app, make):
    requester = make.rural(email="rural@test.example")
    specialist = make.specialist(specialty="cardiology", email="cardio@test.example", timezone="Europe/London")
    make.availability(specialist, hours=(8, 18))
    coordinator = make.coordinator(email="coord@test.example")
    requested = make.requested(requester, chief_complaint="Offered, not taken")
    accepted = make.accepted(requester, specialist, chief_complaint="Accepted, not booked")
    reread()
    return {"requester": requester, "specialist": specialist, "coordinator": coordinator,
            "requested": requested, "accepted": accepted}


def signed_in(app, user):
    client = app.test_client()
    assert login(client, user).status_code == 302
    reread()
    return client


# --- the case form ---------------------------------------------------------------------------------

BAD_CASE_FIELDS = [
    ("patient_age_years", "abc"), ("patient_age_years", "500"), ("patient_age_years", "-1"),
    ("patient_age_years", "12.5"), ("patient_age_years", "99999999999999999999999"),
    ("patient_age_years", "99999999999999999999"), ("spo2", "99999999999999999999"),
    ("heart_rate", "99999999999999999999"), ("patient_age_years", "1" + "0" * 400),
    ("spo2", "9" * 400), ("heart_rate", "-" + "9" * 400), ("bp_systolic", "2147483648"),
    ("temperature_c", "hot"), ("temperature_c", "NaN"), ("temperature_c", "sNaN"),
    ("temperature_c", "Infinity"), ("temperature_c", "-inf"), ("temperature_c", "1e30"),
    ("temperature_c", "1e-999999999"), ("weight_kg", "9" * 400), ("weight_kg", "sNaN"),
    ("spo2", "101"), ("heart_rate", "0x50"), ("bp_systolic", "1e3"),
    ("specialty", "astrology"), ("urgency", "whenever"), ("patient_sex", "robot"),
    ("chief_complaint", "x" * 301), ("history", "y" * 20001), ("question", "q" * 5001),
    ("preferred_times", "p" * 501),
    ("chief_complaint", "Chest\x00pain"), ("history", "NUL \x00 in the history"),
]
BAD_IDS = [f"{name}={value[:12]!r}" for name, value in BAD_CASE_FIELDS]


@pytest.mark.parametrize(("name", "value"), BAD_CASE_FIELDS, ids=BAD_IDS)
def test_bad_case_field_on_edit_changes_nothing(app, world, name, value):
    consult = world["requested"]
    before = columns(Consult, consult.id)
    client = signed_in(app, world["requester"])
    r = post_form(client, f"/consults/{consult.ref}/edit", {**BLANK_CASE, name: value, "save": "1"},
                  token_from=f"/consults/{consult.ref}/edit")
    not_500(r)
    assert r.status_code in (400, 422), (r.status_code, message(r))
    assert message(r), "the refusal says what is wrong"
    assert columns(Consult, consult.id) == before


@pytest.mark.parametrize(("name", "value"), BAD_CASE_FIELDS, ids=BAD_IDS)
def test_bad_case_field_on_new_stores_nothing(app, world, name, value):
    client = signed_in(app, world["requester"])
    count = db.session.scalar(select(func.count()).select_from(Consult))
    r = post_form(client, "/consults/new", {**BLANK_CASE, name: value, "save": "Save draft"},
                  token_from="/consults/new")
    not_500(r)
    assert r.status_code in (400, 422), (r.status_code, message(r))
    reread()
    assert db.session.scalar(select(func.count()).select_from(Consult)) == count


def test_case_form_messages_name_the_problem(app, world):
    client = signed_in(app, world["requester"])
    r = post_form(client, "/consults/new", {**BLANK_CASE, "patient_age_years": "abc", "temperature_c": "hot",
                                            "spo2": "140", "specialty": "astrology", "save": "1"},
                  token_from="/consults/new")
    assert r.status_code == 422
    text = message(r)
    assert "Not a valid integer value." in text
    assert "Not a valid decimal value." in text
    assert "Between 50 and 100 %." in text
    assert "Not a valid choice." in text


def test_numbers_too_large_for_any_column_are_refused_at_the_field(app, world):
    client = signed_in(app, world["requester"])
    r = post_form(client, "/consults/new", {**BLANK_CASE, "patient_age_years": "1" + "0" * 400, "save": "1"},
                  token_from="/consults/new")
    assert r.status_code == 422
    assert "The number is too large." in message(r)


# --- unknown ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/admin/registrations/999999/approve", "/admin/registrations/999999/reject",
    "/admin/registrations/99999999999999999999/approve", "/admin/partnerships/999999/delete",
    "/admin/partnerships/99999999999999999999/delete", "/admin/consults/NOSUCHREF/assign",
])
def test_unknown_ids_in_admin_actions_are_404(app, world, path):
    client = signed_in(app, world["coordinator"])
    data = {"note": "n/a", "specialist_id": str(world["specialist"].id)}
    r = post_form(client, path, data)
    assert r.status_code == 404, (r.status_code, message(r))


@pytest.mark.parametrize("path", [
    "/admin/facilities/999999/edit", "/admin/facilities/99999999999999999999/edit",
    "/admin/facilities/-1/edit",
])
def test_unknown_facility_is_404(app, world, path):
    client = signed_in(app, world["coordinator"])
    assert client.get(path).status_code == 404


@pytest.mark.parametrize("attachment_id", ["999999", "99999999999999999999", "0", "-1", "abc"])
def test_unknown_attachment_is_404(app, world, attachment_id):
    client = signed_in(app, world["requester"])
    r = client.get(f"/consults/{world['accepted'].ref}/attachments/{attachment_id}")
    assert r.status_code == 404


@pytest.mark.parametrize("ref", ["x" * 5000, "%00", "..%2F..%2Fetc%2Fpasswd", "' OR 1=1 --", "%E2%80%AE"])
def test_odd_references_are_404(app, world, ref):
    client = signed_in(app, world["requester"])
    r = client.get(f"/consults/{ref}")
    expected = (400, 404) if ref == "%00" else (404,)  # a NUL is refused before any lookup
    assert r.status_code in expected, (r.status_code, message(r))


@pytest.mark.parametrize("specialist_id", ["abc", "999999", "", "99999999999999999999", "requester"])
def test_assign_with_a_bad_specialist_changes_nothing(app, world, specialist_id):
    consult = world["requested"]
    before = columns(Consult, consult.id)
    value = str(world["requester"].id) if specialist_id == "requester" else specialist_id
    client = signed_in(app, world["coordinator"])
    r = post_form(client, f"/admin/consults/{consult.ref}/assign", {"specialist_id": value})
    assert r.status_code == 422, (r.status_code, message(r))
    assert "Choose an approved specialist." in message(r)
    assert columns(Consult, consult.id) == before


@pytest.mark.parametrize("data", [
    {"facility_id": "abc", "partner_id": "1"}, {"facility_id": "999999", "partner_id": "999998"},
    {"facility_id": "", "partner_id": ""}, {},
])
def test_bad_partnership_ids_are_refused(app, world, data):
    client = signed_in(app, world["coordinator"])
    r = post_form(client, "/admin/partnerships", data)
    assert r.status_code == 422, (r.status_code, message(r))
    reread()
    assert db.session.scalar(select(func.count()).select_from(Partnership)) == 0


@pytest.mark.parametrize("data", [
    {"name": "", "level": "county_hospital", "region": "Gansu"},
    {"name": "New", "level": "spaceport", "region": "Gansu"},
    {"name": "n" * 161, "level": "county_hospital", "region": "Gansu"},
    {"name": "Nul\x00Hospital", "level": "county_hospital", "region": "Gansu"},
])
def test_bad_facility_is_refused(app, world, data):
    client = signed_in(app, world["coordinator"])
    count = db.session.scalar(select(func.count()).select_from(Facility))
    r = post_form(client, "/admin/facilities", data)
    not_500(r)
    assert r.status_code in (400, 422)
    reread()
    assert db.session.scalar(select(func.count()).select_from(Facility)) == count


# --- slots ------------------------------------------------------------------------------------------------


def bad_slots(specialist) -> dict[str, str]:
    reread()
    first = scheduling.open_slots(specialist)[0].starts_at
    return {
        "garbage": "next tuesday-ish",
        "naive": first.replace(tzinfo=None).isoformat(),
        "off-grid": (first + timedelta(minutes=7)).isoformat(),
        "outside-hours": first.replace(hour=2, minute=0).isoformat(),
        "past": (first - timedelta(days=30)).isoformat(),
        "beyond-horizon": (first + timedelta(days=400)).isoformat(),
        "year-9999-overflow": "9999-12-31T23:59:59-23:59",
        "year-1-overflow": "0001-01-01T00:00:00+23:59",
        "huge": "2" * 10000,
        "nul": "2030-01-01T10:00:00\x00+00:00",
        "list-like": "['2030-01-01T10:00:00+00:00']",
    }


SLOT_CASES = ["garbage", "naive", "off-grid", "outside-hours", "past", "beyond-horizon",
              "year-9999-overflow", "year-1-overflow", "huge", "nul", "list-like"]


@pytest.mark.parametrize("case", SLOT_CASES)
def test_bad_slot_on_accept_changes_nothing(app, world, case):
    consult = world["requested"]
    slot = bad_slots(world["specialist"])[case]
    before = columns(Consult, consult.id)
    client = signed_in(app, world["specialist"])
    r = post_form(client, f"/consults/{consult.ref}/accept", {"slot": slot},
                  token_from=f"/consults/{consult.ref}/accept")
    not_500(r)
    assert r.status_code in (400, 409, 422), (r.status_code, message(r))
    assert message(r)
    assert columns(Consult, consult.id) == before
    reread()
    assert db.session.scalar(select(Consult.status).where(Consult.id == consult.id)) == ConsultStatus.REQUESTED


@pytest.mark.parametrize("case", [*SLOT_CASES, "empty"])
def test_bad_slot_on_book_changes_nothing(app, world, case):
    consult = world["accepted"]
    slot = "" if case == "empty" else bad_slots(world["specialist"])[case]
    before = columns(Consult, consult.id)
    client = signed_in(app, world["requester"])
    r = post_form(client, f"/consults/{consult.ref}/book", {"slot": slot},
                  token_from=f"/consults/{consult.ref}/book")
    not_500(r)
    assert r.status_code in (400, 409, 422), (r.status_code, message(r))
    assert message(r)
    assert columns(Consult, consult.id) == before
    reread()
    assert consult.appointment is None


def test_booking_a_taken_slot_is_409_and_changes_nothing(app, world, make):
    consult = world["accepted"]
    other = make.accepted(world["requester"], world["specialist"], chief_complaint="Other")
    reread()
    slot = scheduling.open_slots(world["specialist"])[1].starts_at
    client = signed_in(app, world["requester"])
    page = client.get(f"/consults/{consult.ref}/book")  # the page still lists the slot
    assert slot.isoformat() in page.get_data(as_text=True)
    from webapp.consults import services as consults

    consults.book(world["requester"], other.ref, slot)  # someone else takes it meanwhile
    before = columns(Consult, consult.id)
    r = client.post(f"/consults/{consult.ref}/book", data={
        "csrf_token": CSRF_RE.search(page.get_data(as_text=True)).group(1), "slot": slot.isoformat()})
    not_500(r)
    assert r.status_code in (409, 422), (r.status_code, message(r))
    assert columns(Consult, consult.id) == before


# --- other forms ----------------------------------------------------------------------------------------


def test_oversized_reasons_are_refused(app, world):
    consult = world["requested"]
    before = columns(Consult, consult.id)
    client = signed_in(app, world["specialist"])
    r = post_form(client, f"/consults/{consult.ref}/decline", {"reason": "r" * 501})
    assert r.status_code == 422
    doctor = signed_in(app, world["requester"])
    r = post_form(doctor, f"/consults/{consult.ref}/cancel", {"reason": "r" * 501})
    assert r.status_code == 422
    r = post_form(doctor, f"/consults/{consult.ref}/cancel", {"reason": "   "})
    assert r.status_code == 422
    assert columns(Consult, consult.id) == before


def test_oversized_recommendation_is_refused(app, world):
    consult = world["accepted"]
    before = columns(Consult, consult.id)
    client = signed_in(app, world["specialist"])
    r = post_form(client, f"/consults/{consult.ref}/answer",
                  {"assessment": "a" * 20001, "plan": "p", "sign": "Sign and send"})
    assert r.status_code == 422
    assert columns(Consult, consult.id) == before
    reread()
    assert db.session.get(Consult, consult.id).recommendation is None


@pytest.mark.parametrize("rows", [
    {"windows-0-weekday": "9", "windows-0-start": "480", "windows-0-end": "600"},
    {"windows-0-weekday": "1", "windows-0-start": "abc", "windows-0-end": "600"},
    {"windows-0-weekday": "1", "windows-0-start": "600", "windows-0-end": "480"},
    {"windows-0-weekday": "1", "windows-0-start": "480", "windows-0-end": ""},
    {"windows-999-weekday": "1", "windows-999-start": "480", "windows-999-end": "600"},
])
def test_bad_availability_changes_nothing(app, world, rows):
    specialist = world["specialist"]
    before = [(w.weekday, w.start_minute, w.end_minute) for w in scheduling.windows_of(specialist)]
    client = signed_in(app, specialist)
    r = post_form(client, "/availability", rows, token_from="/availability")
    not_500(r)
    assert r.status_code in (400, 422), (r.status_code, message(r))
    reread()
    assert [(w.weekday, w.start_minute, w.end_minute) for w in scheduling.windows_of(specialist)] == before


@pytest.mark.parametrize("override", [
    {"facility_id": "abc"}, {"facility_id": "999999"}, {"timezone": "Mars/Olympus_Mons"},
    {"languages": ["xx"]}, {"role": "coordinator"}, {"role": "admin"}, {"email": "not-an-email"},
    {"full_name": "n" * 121}, {"licence_number": ""}, {"specialty": "astrology", "role": "specialist"},
    {"role": "specialist", "specialty": ""}, {"confirm": "different-password"},
    {"full_name": "Dr\x00Nul"}, {"password": "p" * 201, "confirm": "p" * 201},
])
def test_bad_registration_creates_no_account(app, make, override):
    facility = make.facility()
    client = app.test_client()
    data = {"full_name": "Dr New", "email": "new@test.example", "password": PASSWORD, "confirm": PASSWORD,
            "role": "rural_doctor", "facility_id": str(facility.id), "specialty": "",
            "languages": ["zh-CN"], "licence_number": "123", "timezone": "Asia/Shanghai", **override}
    r = post_form(client, "/register", data, token_from="/register")
    not_500(r)
    assert r.status_code in (400, 409, 422), (r.status_code, message(r))
    reread()
    assert db.session.scalar(select(func.count()).select_from(User)) == 0


@pytest.mark.parametrize(("email", "password"), [
    ("a" * 10000 + "@test.example", "x"), ("nul\x00@test.example", "x"), ("", ""),
    ("rural@test.example", "p" * 100000), ("rural@test.example", "\x00"),
])
def test_bad_login_input_is_refused_cleanly(app, world, email, password):
    client = app.test_client()
    r = client.post("/login", data={"csrf_token": csrf_token(client), "email": email, "password": password})
    not_500(r)
    assert r.status_code in (400, 401, 413, 422)


@pytest.mark.parametrize("query", [
    "page=99999999999999999999", "page=-5", "page=abc", "page=0", "actor=%00", "consult=%00",
    "action=%25", "consult=" + "x" * 5000,
])
def test_audit_log_filters_never_500(app, world, query):
    client = signed_in(app, world["coordinator"])
    r = client.get(f"/admin/audit?{query}")
    assert r.status_code in (200, 400, 422), (r.status_code, message(r))  # 422: a bad filter, said at its field


# --- expired and tampered sessions ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["cleared", "tampered", "other-key", "garbage"])
def test_form_posted_with_a_dead_session_changes_nothing(app, world, how):
    consult = world["requested"]
    before = columns(Consult, consult.id)
    client = signed_in(app, world["requester"])
    token = csrf_token(client, f"/consults/{consult.ref}/edit")
    value = client.get_cookie("session").value
    if how == "cleared":
        client.delete_cookie("session")
    elif how == "tampered":
        client.set_cookie("session", value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB"))
    elif how == "other-key":
        from itsdangerous import URLSafeTimedSerializer

        forged = URLSafeTimedSerializer("not-the-real-key", salt="cookie-session").dumps(
            {"_user_id": world["requester"].login_token, "_fresh": True})
        client.set_cookie("session", forged)
    else:
        client.set_cookie("session", "\x7f\x00garbage;;==")
    r = client.post(f"/consults/{consult.ref}/edit", data={
        "csrf_token": token, **BLANK_CASE, "chief_complaint": "Changed by a dead session", "save": "1"})
    not_500(r)
    assert r.status_code in (302, 400), (r.status_code, message(r))
    if r.status_code == 302:
        assert r.headers["Location"].startswith("/login")
    assert columns(Consult, consult.id) == before
    reread()
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "consult.edited")) == 0
