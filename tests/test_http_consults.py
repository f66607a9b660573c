"""The consult journey over HTTP, as a browser drives it: real pages, real forms, CSRF tokens read
from the pages, and the database checked after every step."""

from __future__ import annotations

import html
import io
import re
from datetime import datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import func, select, update

from tests.conftest import CSRF_RE, login, post_form
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import (
    AccountStatus,
    Attachment,
    AuditEvent,
    Consult,
    ConsultStatus,
    Facility,
    OfferStatus,
    Partnership,
    Recommendation,
    Role,
    User,
    utcnow,
)
from webapp.scheduling import services as scheduling

pytestmark = pytest.mark.usefixtures("isolated_requests")

JSON = {"Accept": "application/json"}
SHANGHAI, LONDON = "Asia/Shanghai", "Europe/London"


# --- helpers ------------------------------------------------------------------------------------------


def reread() -> None:
    """End the test's read transaction and forget loaded rows, to see what requests committed."""
    db.session.rollback()
    db.session.expire_all()


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def flashes(response) -> list[str]:
    return [html.unescape(m) for m in
            re.findall(r'<div class="flash [a-z]+" role="status">(.*?)</div>', response.get_data(as_text=True))]


def lede(response) -> str:
    found = re.search(r'<p class="lede">(.*?)</p>', response.get_data(as_text=True))
    return html.unescape(found.group(1)) if found else ""


def token_of(page) -> str:
    match = CSRF_RE.search(page.get_data(as_text=True))
    assert match, "no CSRF token on the page"
    return match.group(1)


def submit(client: FlaskClient, page_url: str, data: dict, *, action: str | None = None, **kw):
    """GET the page, read its CSRF token, POST the form (to the page itself or to ``action``)."""
    page = client.get(page_url)
    assert page.status_code == 200, (page_url, page.status_code)
    return client.post(action or page_url, data={"csrf_token": token_of(page), **data}, **kw)


def radio_values(page, name: str = "slot") -> list[str]:
    values = []
    for tag in re.findall(r"<input[^>]*>", page.get_data(as_text=True)):
        if f'name="{name}"' in tag and 'type="radio"' in tag:
            found = re.search(r'value="([^"]*)"', tag)
            values.append(html.unescape(found.group(1)) if found else "")
    return values


def ref_from(location: str) -> str:
    match = re.fullmatch(r"/consults/([A-Za-z0-9_-]+)(/edit)?", urlsplit(location).path)
    assert match, location
    return match.group(1)


def consult(ref: str) -> Consult:
    reread()
    c = db.session.scalar(select(Consult).where(Consult.ref == ref))
    assert c is not None
    return c


def shown(dt: datetime, tz: str) -> str:
    """How a UTC instant must read for a viewer in ``tz``: local time, abbreviation and zone name."""
    local = dt.astimezone(ZoneInfo(tz))
    return f"{local:%a %d %b %Y, %H:%M} {local.tzname()} ({tz})"


def png(colour: str = "red", size: tuple[int, int] = (16, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


CASE = {
    "specialty": "cardiology", "urgency": "urgent", "patient_age_years": "58", "patient_sex": "female",
    "chief_complaint": "Chest tightness on exertion", "history": "Three weeks, worse on stairs.",
    "findings": "BP 150/95, no murmurs.", "current_treatment": "Aspirin 100 mg",
    "question": "Stress test or angiography?", "preferred_times": "Weekday mornings",
    "bp_systolic": "150", "bp_diastolic": "95", "heart_rate": "88", "respiratory_rate": "16",
    "temperature_c": "36.8", "spo2": "97", "weight_kg": "64.5",
}


def scheduled(make, requester, specialist, **overrides):
    """Like ``make.scheduled`` but on the second free slot: the first one can slip inside the
    minimum booking lead time while the test runs (when the clock passes :15 or :45)."""
    c = make.requested(requester, **overrides)
    return consults.accept(specialist, c.ref, scheduling.open_slots(specialist)[1].starts_at)


def user_client(app, user: User) -> FlaskClient:
    client = app.test_client()
    assert login(client, user).status_code == 302
    reread()
    return client


@pytest.fixture
def people(make):
    """A rural doctor in Shanghai, a cardiologist in London with open hours, a coordinator."""
    rural_facility = make.facility("Qingshan County Hospital")
    partner = make.facility("Lanzhou Regional Centre")
    make.partnership(rural_facility, partner)
    requester = make.rural(facility=rural_facility, email="li@test.example", name="Dr Li",
                           timezone=SHANGHAI)
    specialist = make.specialist(facility=partner, specialty="cardiology", email="smith@test.example",
                                 name="Dr Smith", timezone=LONDON)
    make.availability(specialist)
    coordinator = make.coordinator(email="coord@test.example", name="Coordinator Wang")
    return requester, specialist, coordinator


# --- the journey ------------------------------------------------------------------------------------


def test_full_journey_over_http(app, people):
    requester, specialist, _ = people
    doctor = user_client(app, requester)

    # 1. A draft from the new-request page.
    r = submit(doctor, "/consults/new", {**CASE, "history": "", "save": "Save draft"})
    assert r.status_code == 302
    ref = ref_from(r.headers["Location"])
    assert r.headers["Location"].endswith(f"/consults/{ref}/edit")
    c = consult(ref)
    assert c.status == ConsultStatus.DRAFT
    assert c.requester_id == requester.id
    assert c.chief_complaint == "Chest tightness on exertion"
    assert c.patient_age_years == 58 and str(c.temperature_c) == "36.8" and c.spo2 == 97
    page = doctor.get(f"/consults/{ref}/edit")
    assert "Draft saved" in " ".join(flashes(page))

    # 2. Edit it.
    r = submit(doctor, f"/consults/{ref}/edit", {**CASE, "history": "Three weeks; now at rest too.",
                                                 "save": "Save draft"})
    assert r.status_code == 302
    assert consult(ref).history == "Three weeks; now at rest too."
    assert consult(ref).status == ConsultStatus.DRAFT

    # 3. Attach a PNG with the edit page's upload form.
    page = doctor.get(f"/consults/{ref}/edit")
    r = doctor.post(f"/consults/{ref}/attachments", data={
        "csrf_token": token_of(page), "back": "edit", "description": "12-lead ECG",
        "file": (io.BytesIO(png()), "ecg photo.png"),
    }, content_type="multipart/form-data")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/consults/{ref}/edit")
    reread()
    att = db.session.scalar(select(Attachment).where(Attachment.consult_id == consult(ref).id))
    assert att.content_type == "image/png" and att.original_name == "ecg photo.png"
    assert (att.width, att.height) == (16, 12)
    page = doctor.get(f"/consults/{ref}/edit")
    assert f"/consults/{ref}/attachments/{att.id}" in text(page)
    assert "12-lead ECG" in text(page)

    # 4. Send.
    r = submit(doctor, f"/consults/{ref}/edit", {**CASE, "history": "Three weeks; now at rest too.",
                                                 "send": "Send request"})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/consults/{ref}")
    c = consult(ref)
    assert c.status == ConsultStatus.REQUESTED and c.submitted_at is not None
    assert [(o.specialist_id, o.status, o.is_partner) for o in c.offers] == [
        (specialist.id, OfferStatus.OFFERED, True)]

    # 5. The specialist sees it offered on the dashboard and accepts with a slot from the page.
    cardio = user_client(app, specialist)
    dash = cardio.get("/")
    assert dash.status_code == 200
    assert "Requests offered to you" in text(dash) and "Chest tightness on exertion" in text(dash)
    assert f"/consults/{ref}/accept" in text(dash)
    page = cardio.get(f"/consults/{ref}/accept")
    assert page.status_code == 200
    slots = radio_values(page)
    assert slots[0] == "" and len(slots) > 2, "written answer first, then the open slots"
    chosen = slots[2]
    starts = datetime.fromisoformat(chosen)
    assert shown(starts, LONDON) in text(page), "the accept page lists slots in the specialist's zone"
    r = cardio.post(f"/consults/{ref}/accept", data={"csrf_token": token_of(page), "slot": chosen})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/consults/{ref}")
    c = consult(ref)
    assert c.status == ConsultStatus.SCHEDULED and c.specialist_id == specialist.id
    assert c.appointment is not None and c.appointment.starts_at == starts
    assert c.appointment.ends_at - c.appointment.starts_at == timedelta(minutes=app.config["SLOT_MINUTES"])

    # 6. Each side sees the booked time in their own zone, with the zone named.
    mine = text(doctor.get(f"/consults/{ref}"))
    assert shown(starts, SHANGHAI) in mine
    assert "CST (Asia/Shanghai)" in mine
    assert "For the specialist: " + shown(starts, LONDON) in mine
    theirs = text(cardio.get(f"/consults/{ref}"))
    assert shown(starts, LONDON) in theirs
    assert shown(starts, SHANGHAI) not in theirs
    assert starts.astimezone(ZoneInfo(SHANGHAI)).strftime("%H:%M") != starts.astimezone(
        ZoneInfo(LONDON)).strftime("%H:%M")
    assert shown(starts, SHANGHAI) in text(doctor.get("/")), "the requester's dashboard lists it too"
    assert shown(starts, LONDON) in text(cardio.get("/"))

    # 7. A draft answer, then the signature.
    r = submit(cardio, f"/consults/{ref}/answer", {"assessment": "Probable stable angina.", "plan": "",
                                                   "save": "Save draft"})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/consults/{ref}/answer")
    c = consult(ref)
    assert c.status == ConsultStatus.SCHEDULED
    assert c.recommendation.assessment == "Probable stable angina." and c.recommendation.signed_at is None
    page = cardio.get(f"/consults/{ref}/answer")
    assert "Probable stable angina." in text(page), "the draft is shown again"
    assert "Specialist recommendation" not in text(doctor.get(f"/consults/{ref}")), "drafts stay private"
    r = cardio.post(f"/consults/{ref}/answer", data={
        "csrf_token": token_of(page), "assessment": "Probable stable angina.",
        "plan": "Exercise stress test within two weeks.", "follow_up": "Review in one month.",
        "sign": "Sign and send"})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/consults/{ref}")
    c = consult(ref)
    assert c.status == ConsultStatus.COMPLETED and c.completed_at is not None
    rec = c.recommendation
    assert rec.is_signed and rec.content_sha256 and consults.verify_signature(rec)
    assert rec.mode.value == "written", "no call was connected, so the answer is recorded as written"

    # 8. The requester reads and acknowledges it.
    page = doctor.get(f"/consults/{ref}")
    body = text(page)
    assert "Exercise stress test within two weeks." in body
    assert "the record matches its signature" in body
    assert f"/consults/{ref}/acknowledge" in body
    r = doctor.post(f"/consults/{ref}/acknowledge", data={"csrf_token": token_of(page)})
    assert r.status_code == 302
    c = consult(ref)
    assert c.recommendation.acknowledged_at is not None
    assert c.recommendation.acknowledged_by_id == requester.id
    page = doctor.get(f"/consults/{ref}")
    assert "Acknowledged" in text(page) and f"/consults/{ref}/acknowledge" not in text(page)

    reread()
    actions = list(db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.consult_id == c.id).order_by(AuditEvent.id)))
    for expected in ("consult.created", "consult.edited", "attachment.added", "consult.submitted",
                     "consult.accepted", "recommendation.draft_saved", "consult.signed",
                     "consult.acknowledged", "consult.viewed"):
        assert expected in actions, expected


def test_written_accept_then_requester_books_from_the_book_page(app, people, make):
    requester, specialist, _ = people
    ref = make.draft(requester, chief_complaint="Palpitations", history="").ref
    doctor = user_client(app, requester)
    r = submit(doctor, f"/consults/{ref}/edit", {**CASE, "chief_complaint": "Palpitations",
                                                 "send": "Send request"})
    assert r.status_code == 302 and consult(ref).status == ConsultStatus.REQUESTED

    cardio = user_client(app, specialist)
    r = submit(cardio, f"/consults/{ref}/accept", {"slot": ""})
    assert r.status_code == 302
    c = consult(ref)
    assert c.status == ConsultStatus.ACCEPTED and c.appointment is None
    assert "no call booked" in text(doctor.get(f"/consults/{ref}"))

    page = doctor.get(f"/consults/{ref}/book")
    assert page.status_code == 200
    values = radio_values(page)
    assert values and "" not in values
    starts = datetime.fromisoformat(values[1])
    assert shown(starts, SHANGHAI) in text(page), "the book page lists the specialist's slots in my zone"
    r = doctor.post(f"/consults/{ref}/book", data={"csrf_token": token_of(page), "slot": values[1]})
    assert r.status_code == 302
    c = consult(ref)
    assert c.status == ConsultStatus.SCHEDULED and c.appointment.starts_at == starts
    assert c.appointment.booked_by_id == requester.id

    # The booked slot is no longer offered on the specialist's own availability page or elsewhere.
    reread()
    assert starts not in [s.starts_at for s in scheduling.open_slots(specialist)]
    # Booking again is refused politely (already scheduled): back to the consult with a message.
    r = doctor.get(f"/consults/{ref}/book", follow_redirects=True)
    assert r.status_code == 200 and "only once" in " ".join(flashes(r))


def test_cancel_releases_the_slot(app, people, make):
    requester, specialist, _ = people
    c = scheduled(make, requester, specialist)
    starts = c.appointment.starts_at
    doctor = user_client(app, requester)
    r = submit(doctor, f"/consults/{c.ref}", {"reason": "Patient transferred by ambulance."},
               action=f"/consults/{c.ref}/cancel")
    assert r.status_code == 302
    c = consult(c.ref)
    assert c.status == ConsultStatus.CANCELLED and c.cancel_reason == "Patient transferred by ambulance."
    assert c.appointment is None
    reread()
    assert starts in [s.starts_at for s in scheduling.open_slots(specialist)]
    assert "Patient transferred by ambulance." in text(doctor.get(f"/consults/{c.ref}"))


def test_specialist_declines_with_a_reason(app, people, make):
    requester, specialist, coordinator = people
    c = make.requested(requester)
    cardio = user_client(app, specialist)
    r = submit(cardio, f"/consults/{c.ref}/accept", {"reason": ""}, action=f"/consults/{c.ref}/decline")
    assert r.status_code == 422
    assert "Say why you decline" in lede(r)
    assert consult(c.ref).offers[0].status == OfferStatus.OFFERED

    r = submit(cardio, f"/consults/{c.ref}/accept", {"reason": "On leave this month."},
               action=f"/consults/{c.ref}/decline")
    assert r.status_code == 302
    c = consult(c.ref)
    assert c.status == ConsultStatus.DECLINED
    assert c.offers[0].decline_reason == "On leave this month."
    # The coordinator sees it in the queue with the reason and assigns it.
    coord = user_client(app, coordinator)
    assert "On leave this month." in text(coord.get(f"/consults/{c.ref}"))
    r = submit(coord, f"/consults/{c.ref}", {"specialist_id": str(specialist.id)},
               action=f"/admin/consults/{c.ref}/assign")
    assert r.status_code == 302
    c = consult(c.ref)
    assert c.status == ConsultStatus.ACCEPTED and c.specialist_id == specialist.id
    assert c.assigned_by_id == coordinator.id


# --- incomplete requests ------------------------------------------------------------------------------


def test_send_from_new_page_with_missing_fields_creates_nothing(app, people):
    # Issue 10: a refused send once saved an "Untitled draft" each time. Now nothing is stored, the
    # form comes back (422) with what was typed and one message at each missing field.
    requester, _, _ = people
    doctor = user_client(app, requester)
    blank = {key: "" for key in CASE}
    r = submit(doctor, "/consults/new", {**blank, "chief_complaint": "Rash on both forearms",
                                         "urgency": "routine", "send": "Send request"})
    assert r.status_code == 422
    message = " ".join(flashes(r))
    assert "Before sending the request, fill in" in message
    assert "the specialty needed" in message and "the patient's age" in message
    assert 'value="Rash on both forearms"' in text(r), "what was typed is kept"
    reread()
    assert db.session.scalar(select(func.count()).select_from(Consult)) == 0


def test_send_from_edit_page_with_missing_fields_is_422_and_keeps_edits(app, people, make):
    requester, _, _ = people
    c = make.draft(requester, question="")
    doctor = user_client(app, requester)
    r = submit(doctor, f"/consults/{c.ref}/edit", {**CASE, "question": "", "findings": "New findings",
                                                   "send": "Send request"})
    assert r.status_code == 422
    body = text(r)
    assert "Before sending the request, fill in your question for the specialist." in body
    assert '<ul class="errors">' in r.get_data(as_text=True), "the missing field is marked"
    c = consult(c.ref)
    assert c.status == ConsultStatus.DRAFT and c.offers == []
    assert c.findings == "New findings", "what was typed is kept"


def test_saving_an_incomplete_sent_request_is_refused(app, people, make):
    requester, _, _ = people
    c = make.requested(requester)
    before = (c.history, c.version)
    doctor = user_client(app, requester)
    r = submit(doctor, f"/consults/{c.ref}/edit", {**CASE, "history": "", "save": "1"})
    assert r.status_code == 422
    assert "fill in the history" in text(r)
    c = consult(c.ref)
    assert (c.history, c.version) == before and c.status == ConsultStatus.REQUESTED


# --- illegal transitions: 409 pages with a message -------------------------------------------------------


def test_acknowledge_twice_is_409(app, people, make):
    requester, specialist, _ = people
    c = make.accepted(requester, specialist)
    consults.save_recommendation(specialist, c.ref, consults.RecommendationData(
        assessment="A", plan="P"), sign=True)
    doctor = user_client(app, requester)
    assert post_form(doctor, f"/consults/{c.ref}/acknowledge").status_code == 302
    first = consult(c.ref).recommendation.acknowledged_at
    r = post_form(doctor, f"/consults/{c.ref}/acknowledge")
    assert r.status_code == 409
    assert lede(r) == "You have already acknowledged this recommendation."
    assert "Not possible now" in text(r)
    assert consult(c.ref).recommendation.acknowledged_at == first


def test_acknowledge_before_signature_is_409(app, people, make):
    requester, specialist, _ = people
    c = make.accepted(requester, specialist)
    doctor = user_client(app, requester)
    r = post_form(doctor, f"/consults/{c.ref}/acknowledge")
    assert r.status_code == 409 and "no signed recommendation" in lede(r)


def test_accept_after_another_specialist_accepted_is_409(app, people, make):
    requester, specialist, _ = people
    rival = make.specialist(specialty="cardiology", email="rival@test.example", timezone="Asia/Shanghai")
    c = make.requested(requester)
    cardio, other = user_client(app, specialist), user_client(app, rival)
    mine = cardio.get(f"/consults/{c.ref}/accept")
    theirs = other.get(f"/consults/{c.ref}/accept")
    assert mine.status_code == theirs.status_code == 200

    r = cardio.post(f"/consults/{c.ref}/accept", data={"csrf_token": token_of(mine), "slot": ""})
    assert r.status_code == 302
    r = other.post(f"/consults/{c.ref}/accept", data={"csrf_token": token_of(theirs), "slot": ""})
    assert r.status_code == 409
    assert "no longer open to you" in lede(r)
    assert c.chief_complaint not in text(r), "no case data on the refusal"
    c = consult(c.ref)
    assert c.specialist_id == specialist.id and c.status == ConsultStatus.ACCEPTED
    # Declining it now is refused the same way.
    r = post_form(other, f"/consults/{c.ref}/decline", {"reason": "Too late"})
    assert r.status_code == 409


def test_accept_a_slot_that_became_too_soon_says_so_and_keeps_the_offer(app, people, make):
    """The earliest slot lies just past the booking lead: when the clock passes it while the page
    is open, the specialist is told to choose a later time, on the page, with the slots still there."""
    requester, specialist, _ = people
    c = make.requested(requester)
    cardio = user_client(app, specialist)
    page = cardio.get(f"/consults/{c.ref}/accept")
    earliest = radio_values(page)[1]
    # Time passes: the lead now reaches past the earliest slot shown.
    lead = app.config["BOOKING_MIN_LEAD_MINUTES"]
    app.config["BOOKING_MIN_LEAD_MINUTES"] = lead + app.config["SLOT_MINUTES"] + 1
    try:
        r = cardio.post(f"/consults/{c.ref}/accept", data={"csrf_token": token_of(page), "slot": earliest})
    finally:
        app.config["BOOKING_MIN_LEAD_MINUTES"] = lead
    assert r.status_code == 422
    assert "That time has passed or is too soon; choose a later slot." in flashes(r)
    assert earliest not in radio_values(r) and len(radio_values(r)) > 2, "later slots are offered"
    c = consult(c.ref)
    assert c.status == ConsultStatus.REQUESTED and c.specialist_id is None and c.appointment is None


def test_submit_twice_is_409(app, people, make):
    requester, _, _ = people
    c = make.requested(requester)
    doctor = user_client(app, requester)
    r = post_form(doctor, f"/consults/{c.ref}/submit")
    assert r.status_code == 409
    assert "cannot submit a consult whose status is “Awaiting specialist”" in lede(r)
    assert len(consult(c.ref).offers) == 1


def test_signing_twice_is_refused_without_changes(app, people, make):
    requester, specialist, _ = people
    c = make.accepted(requester, specialist)
    consults.save_recommendation(specialist, c.ref, consults.RecommendationData(
        assessment="A", plan="P"), sign=True)
    signed_hash = consult(c.ref).recommendation.content_sha256
    cardio = user_client(app, specialist)
    r = post_form(cardio, f"/consults/{c.ref}/answer", {"assessment": "Changed", "plan": "Changed",
                                                        "sign": "Sign and send"})
    assert r.status_code in (302, 409)
    rec = consult(c.ref).recommendation
    assert rec.assessment == "A" and rec.content_sha256 == signed_hash


# --- JSON callers ---------------------------------------------------------------------------------


def test_json_callers_get_error_bodies(app, people, make):
    requester, specialist, _ = people
    c = make.accepted(requester, specialist)
    consults.save_recommendation(specialist, c.ref, consults.RecommendationData(
        assessment="A", plan="P"), sign=True)
    doctor = user_client(app, requester)
    assert post_form(doctor, f"/consults/{c.ref}/acknowledge").status_code == 302

    def check(response, status, code):
        assert response.status_code == status, response.get_data(as_text=True)[:300]
        assert response.mimetype == "application/json"
        body = response.get_json()
        assert body["error"] == code
        assert isinstance(body["message"], str) and body["message"]
        return body

    body = check(post_form(doctor, f"/consults/{c.ref}/acknowledge", headers=JSON), 409, "conflict")
    assert body["message"] == "You have already acknowledged this recommendation."
    check(doctor.get("/consults/NOSUCHREF0000000", headers=JSON), 404, "not_found")
    check(doctor.get(f"/consults/{c.ref}/answer", headers=JSON), 403, "forbidden")
    check(doctor.post(f"/consults/{c.ref}/acknowledge", headers=JSON), 400, "csrf_failed")
    check(doctor.get("/no/such/page", headers=JSON), 404, "not_found")
    check(doctor.delete(f"/consults/{c.ref}", headers=JSON), 405, "method_not_allowed")

    reread()
    fresh = make.requested(requester)
    cardio = user_client(app, specialist)
    body = check(post_form(cardio, f"/consults/{fresh.ref}/decline", {"reason": ""}, headers=JSON),
                 422, "invalid_input")
    assert body["fields"] == {"reason": "required"}
    body = check(post_form(cardio, f"/consults/{fresh.ref}/accept", {"slot": "not-a-time"}, headers=JSON),
                 422, "invalid_input")
    assert "could not be read" in body["message"]

    anonymous = app.test_client()
    r = anonymous.get(f"/consults/{c.ref}", headers=JSON)
    check(r, 401, "unauthorized")
    # A browser is still sent to the sign-in page.
    r = anonymous.get(f"/consults/{c.ref}")
    assert r.status_code == 302 and urlsplit(r.headers["Location"]).path == "/login"


# --- coordinator pages -------------------------------------------------------------------------------


def test_coordinator_dashboard_and_queue_show_waiting_time(app, people, make):
    requester, specialist, coordinator = people
    waiting = make.requested(requester, chief_complaint="Waiting since this morning",
                             urgency=consults.Urgency.ROUTINE)
    scheduled(make, requester, specialist, chief_complaint="Already booked")
    db.session.execute(update(Consult).where(Consult.id == waiting.id).values(
        submitted_at=utcnow() - timedelta(hours=3, minutes=5), version=Consult.version + 1))
    db.session.commit()
    pending = make.rural(status=AccountStatus.PENDING, name="Dr Pending")

    coord = user_client(app, coordinator)
    dash = coord.get("/")
    assert dash.status_code == 200
    body = text(dash)
    assert "Programme overview" in body and "Dr Pending" in body
    assert "Waiting since this morning" in body and "Already booked" not in body
    assert "3 h 5 min" in body

    queue = coord.get("/admin/queue")
    assert queue.status_code == 200
    body = text(queue)
    assert "Waiting since this morning" in body and "3 h 5 min" in body
    assert "Already booked" not in body
    assert "1 open / 1" in body
    assert pending.full_name not in body


def test_coordinator_approves_and_rejects_registrations(app, people, make):
    _, _, coordinator = people
    first = make.specialist(status=AccountStatus.PENDING, name="Dr First", email="first@test.example")
    second = make.rural(status=AccountStatus.PENDING, name="Dr Second", email="second@test.example")
    coord = user_client(app, coordinator)
    page = coord.get("/admin/registrations")
    assert page.status_code == 200 and "Dr First" in text(page) and "Dr Second" in text(page)

    r = coord.post(f"/admin/registrations/{first.id}/approve", data={"csrf_token": token_of(page)})
    assert r.status_code == 302
    r = coord.post(f"/admin/registrations/{second.id}/reject", data={"csrf_token": token_of(page), "note": ""})
    assert r.status_code == 422 and "Give a reason" in lede(r)
    r = coord.post(f"/admin/registrations/{second.id}/reject",
                   data={"csrf_token": token_of(page), "note": "Licence number not found."})
    assert r.status_code == 302
    page = coord.get(r.headers["Location"])
    assert "Dr First can now sign in." in " ".join(flashes(page)) or "The registration of Dr Second" in text(page)
    reread()
    first, second = db.session.get(User, first.id), db.session.get(User, second.id)
    assert first.status == AccountStatus.APPROVED and first.reviewed_by_id == coordinator.id
    assert second.status == AccountStatus.REJECTED and second.review_note == "Licence number not found."
    # Reviewing twice is a conflict, not a silent change.
    r = post_form(coord, f"/admin/registrations/{first.id}/reject", {"note": "Oops"})
    assert r.status_code == 409 and "already approved" in lede(r)
    reread()
    assert db.session.get(User, first.id).status == AccountStatus.APPROVED

    other_client = user_client(app, make.rural())
    assert post_form(other_client, f"/admin/registrations/{second.id}/approve").status_code == 403


def test_coordinator_manages_facilities_and_partnerships(app, people):
    _, _, coordinator = people
    coord = user_client(app, coordinator)
    page = coord.get("/admin/facilities")
    assert page.status_code == 200 and "Qingshan County Hospital" in text(page)
    token = token_of(page)

    r = coord.post("/admin/facilities", data={"csrf_token": token, "name": "Baiyin Township Centre",
                                              "level": "township_health_centre", "region": "Baiyin"})
    assert r.status_code == 302
    reread()
    township = db.session.scalar(select(Facility).where(Facility.name == "Baiyin Township Centre"))
    assert township is not None and township.level.value == "township_health_centre"

    r = coord.post("/admin/facilities", data={"csrf_token": token, "name": "Baiyin Township Centre",
                                              "level": "township_health_centre", "region": "Baiyin"})
    assert r.status_code == 409 and "already exists" in lede(r)

    r = submit(coord, f"/admin/facilities/{township.id}/edit",
               {"name": "Baiyin Township Health Centre", "level": "township_health_centre", "region": "Baiyin"})
    assert r.status_code == 302
    reread()
    assert db.session.get(Facility, township.id).name == "Baiyin Township Health Centre"

    regional = db.session.scalar(select(Facility).where(Facility.name == "Lanzhou Regional Centre"))
    r = coord.post("/admin/partnerships", data={"csrf_token": token, "facility_id": str(township.id),
                                                "partner_id": str(regional.id)})
    assert r.status_code == 302
    reread()
    pair = db.session.scalar(select(Partnership).where(Partnership.facility_id == township.id))
    assert pair is not None and pair.partner_id == regional.id
    page = coord.get("/admin/facilities")
    assert "Baiyin Township Health Centre" in text(page)

    r = coord.post("/admin/partnerships", data={"csrf_token": token, "facility_id": str(regional.id),
                                                "partner_id": str(township.id)})
    assert r.status_code == 409 and "already partners" in lede(r)
    r = coord.post("/admin/partnerships", data={"csrf_token": token, "facility_id": str(township.id),
                                                "partner_id": str(township.id)})
    assert r.status_code == 422 and "cannot partner with itself" in lede(r)

    pair_id = pair.id
    r = coord.post(f"/admin/partnerships/{pair_id}/delete", data={"csrf_token": token})
    assert r.status_code == 302
    reread()
    assert db.session.get(Partnership, pair_id) is None
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action.in_(["facility.saved", "partnership.added", "partnership.removed"]))) == 4


def test_audit_log_page_lists_filters_and_pages(app, people, make):
    requester, specialist, coordinator = people
    c = scheduled(make, requester, specialist)
    other = make.requested(requester, chief_complaint="Other")
    doctor = user_client(app, requester)
    for _ in range(3):
        assert doctor.get(f"/consults/{c.ref}").status_code == 200

    coord = user_client(app, coordinator)
    page = coord.get("/admin/audit")
    assert page.status_code == 200
    body = text(page)
    assert "Consult viewed" in body and "Request accepted" in body and "Signed in" in body

    page = coord.get(f"/admin/audit?consult={c.ref}&action=consult.viewed&user={requester.id}")
    body = text(page)
    assert body.count('title="consult.viewed">Consult viewed</span>') == 3
    assert "3 entries" in body
    reread()
    assert f"#{other.id}<" not in page.get_data(as_text=True)

    for _ in range(55):
        doctor.get(f"/consults/{other.ref}")
    page = coord.get("/admin/audit?action=consult.viewed")
    assert ">Older<" in page.get_data(as_text=True)
    page2 = coord.get("/admin/audit?action=consult.viewed&page=2")
    assert page2.status_code == 200 and ">Newer<" in page2.get_data(as_text=True)
    assert coord.get("/admin/audit?page=abc").status_code == 200
    assert coord.get("/admin/audit?page=-4").status_code == 200

    for user in (requester, specialist):
        assert user_client(app, user).get("/admin/audit").status_code == 403


def test_recommendation_with_referral_needs_a_reason(app, people, make):
    requester, specialist, _ = people
    c = make.accepted(requester, specialist)
    cardio = user_client(app, specialist)
    r = submit(cardio, f"/consults/{c.ref}/answer", {"assessment": "STEMI equivalent", "plan": "Transfer",
                                                     "refer_up": "y", "refer_reason": "", "sign": "Sign and send"})
    assert r.status_code == 422
    assert "reason for referral" in text(r)
    c = consult(c.ref)
    assert c.status == ConsultStatus.ACCEPTED
    assert db.session.scalar(select(func.count()).select_from(Recommendation)) == 0
    r = submit(cardio, f"/consults/{c.ref}/answer", {"assessment": "STEMI equivalent", "plan": "Transfer",
                                                     "refer_up": "y", "refer_reason": "Needs PCI",
                                                     "sign": "Sign and send"})
    assert r.status_code == 302
    rec = consult(c.ref).recommendation
    assert rec.refer_up and rec.refer_reason == "Needs PCI" and rec.mode.value == "written"
    assert "Needs PCI" in text(user_client(app, requester).get(f"/consults/{c.ref}"))


def test_roles_only_see_their_own_pages(app, people):
    requester, specialist, coordinator = people
    assert user_client(app, requester).get("/availability").status_code == 403
    assert user_client(app, specialist).get("/consults/new").status_code == 403
    assert user_client(app, coordinator).get("/consults/new").status_code == 403
    assert user_client(app, requester).get("/admin/queue").status_code == 403
    assert user_client(app, specialist).get("/availability").status_code == 200
    reread()
    assert db.session.scalar(select(func.count()).select_from(User).where(User.role == Role.SPECIALIST)) == 1
