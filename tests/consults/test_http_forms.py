"""The consult request form over HTTP keeps what a doctor typed (issue 10, "Losing what a doctor typed").

Required fields are marked before sending, a refused send stores nothing and shows one message at
each field, attaching without JavaScript saves the draft with the upload, upload refusals come back
to the form with the reason at the file field, and the JSON upload endpoint the page's script uses
answers with the stored attachment or a clear error, CSRF token required.
"""

from __future__ import annotations

import html
import io
import re

import pytest
from sqlalchemy import func, select

from tests.conftest import csrf_token, login, png_bytes, post_form
from webapp.consults.services import REQUIRED_TO_SUBMIT
from webapp.extensions import db
from webapp.models import Attachment, AuditEvent, Consult, ConsultStatus

JSON = {"Accept": "application/json"}
# An empty request form as a browser sends it: every control, empty.
BLANK = {name: "" for name in (
    "specialty", "patient_age_years", "patient_sex", "chief_complaint", "history", "findings",
    "current_treatment", "question", "preferred_times", "bp_systolic", "bp_diastolic", "heart_rate",
    "respiratory_rate", "temperature_c", "spo2", "weight_kg")}
TYPED = {"chief_complaint": "Cough for six weeks", "history": "Night sweats, weight loss of 4 kg.",
         "question": "Sputum tests or chest X-ray first?", "urgency": "routine"}


@pytest.fixture
def doctor(app, make):
    user = make.rural()
    client = app.test_client()
    assert login(client, user).status_code == 302
    client.user = user
    return client


@pytest.fixture
def draft(make, doctor):
    return make.draft(doctor.user, history="Old history", question="Old question")


def count(model) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(model))


def body(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def control(page: str, name: str) -> str:
    """The opening tag of the form control named ``name``."""
    found = re.search(rf'<(?:input|select|textarea)\b[^>]*\bname="{name}"[^>]*>', page)
    assert found, f"no control named {name}"
    return found.group(0)


def error_at(page: str, field_id: str) -> str:
    """The message shown next to a field, which its control names in aria-describedby."""
    found = re.search(rf'<div class="field-error" id="{field_id}-error"><ul class="errors"><li>(.*?)</li>', page)
    assert found, f"no error at the field {field_id}"
    return found.group(1)


def attach_on_edit(doctor, ref: str, files, **fields):
    """Press "Attach file" with JavaScript off: the whole case form is posted with the files."""
    token = csrf_token(doctor, f"/consults/{ref}/edit")
    data = {"csrf_token": token, "specialty": "cardiology", "patient_age_years": "60", "patient_sex": "male",
            **TYPED, "attach": "1", "description": "Chest X-ray", "file": files, **fields}
    return doctor.post(f"/consults/{ref}/edit", data=data, content_type="multipart/form-data")


# --- required fields and a refused send -----------------------------------------------------------


def test_required_fields_are_marked_before_sending(doctor):
    page = body(doctor.get("/consults/new"))
    for name in REQUIRED_TO_SUBMIT:
        tag = control(page, name)
        assert 'aria-required="true"' in tag and " required" in tag, tag
        assert re.search(rf'<label for="{name}">[^<]*<span class="req"', page), f"{name} has no visible mark"
    assert 'aria-required' not in control(page, "findings")


def test_empty_send_creates_nothing_and_puts_one_message_at_each_field(doctor):
    r = post_form(doctor, "/consults/new", {**BLANK, "urgency": "routine", "send": "Send request"},
                  token_from="/consults/new")
    assert r.status_code == 422
    assert count(Consult) == 0, "a refused send stores no draft"
    page = body(r)
    for name, label in REQUIRED_TO_SUBMIT.items():
        assert error_at(page, name) == f"Fill in {label} to send the request."
        assert f'aria-describedby="{name}-error"' in control(page, name)
        assert 'aria-invalid="true"' in control(page, name)
    assert page.count('<ul class="errors">') == len(REQUIRED_TO_SUBMIT), "one message per field"
    assert "data-dirty" in page, "what is shown was not stored: leaving must ask"


def test_send_twice_with_text_creates_nothing_and_keeps_the_text(doctor):
    for _ in range(2):
        r = post_form(doctor, "/consults/new", {**BLANK, **TYPED, "send": "Send request"}, token_from="/consults/new")
        assert r.status_code == 422
        assert "Night sweats, weight loss of 4 kg." in body(r)
    assert count(Consult) == 0


def test_complete_send_from_the_new_page_stores_and_sends_once(doctor, make):
    make.specialist(specialty="cardiology")
    r = post_form(doctor, "/consults/new", {**TYPED, "specialty": "cardiology", "patient_age_years": "44",
                                            "patient_sex": "female", "send": "Send request"},
                  token_from="/consults/new")
    assert r.status_code == 302
    db.session.rollback()
    consult = db.session.scalar(select(Consult))
    assert consult.status == ConsultStatus.REQUESTED and len(consult.offers) == 1
    actions = db.session.scalars(select(AuditEvent.action).where(AuditEvent.consult_id == consult.id)).all()
    assert [a for a in actions if a in ("consult.created", "consult.submitted")] == [
        "consult.created", "consult.submitted"]


def test_a_bad_number_shows_one_message_at_its_field(doctor):
    r = post_form(doctor, "/consults/new", {**TYPED, "temperature_c": "abc", "save": "Save draft"},
                  token_from="/consults/new")
    assert r.status_code == 422
    assert error_at(body(r), "temperature_c") == "Not a valid decimal value."
    assert "Between 30 and 45" not in body(r)


# --- attaching without JavaScript: the draft is saved with the upload --------------------------------


def test_attach_without_javascript_saves_the_typed_text_with_the_files(doctor, draft):
    r = attach_on_edit(doctor, draft.ref, [(io.BytesIO(png_bytes()), "xray.png"),
                                           (io.BytesIO(png_bytes(colour="blue")), "xray-lateral.png")])
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/consults/{draft.ref}/edit#attachments")
    db.session.rollback()
    consult = db.session.get(Consult, draft.id)
    assert consult.history == TYPED["history"] and consult.question == TYPED["question"]
    assert sorted(a.original_name for a in consult.attachments) == ["xray-lateral.png", "xray.png"]
    assert "2 files attached." in body(doctor.get(f"/consults/{draft.ref}/edit"))


@pytest.mark.parametrize(("upload", "status", "reason"), [
    ((b"just some text", "notes.txt"), 415, "notes.txt: Only JPEG or PNG images and PDF documents can be attached."),
    ((png_bytes((120, 120), noise=True), "scan.png"), 413, "scan.png: Files may be at most"),
])
def test_upload_refused_without_javascript_returns_the_form_with_the_reason_at_the_file_field(
        app, monkeypatch, doctor, draft, upload, status, reason):
    monkeypatch.setitem(app.config, "MAX_UPLOAD_BYTES", 20_000)  # the noisy PNG is ~43 KB
    content, name = upload
    r = attach_on_edit(doctor, draft.ref, (io.BytesIO(content), name))
    assert r.status_code == status
    page = body(r)
    assert "Edit consult request" in page, "the form, not an error page"
    assert error_at(page, "upload").startswith(reason)
    assert 'aria-describedby="upload-help upload-error"' in control(page, "file")
    assert TYPED["history"] in page and TYPED["question"] in page, "the typed text is still on the form"
    db.session.rollback()
    assert db.session.get(Consult, draft.id).history == TYPED["history"], "and it was saved"
    assert count(Attachment) == 0


def test_upload_refused_on_the_view_page_returns_that_page_with_the_reason(doctor, draft):
    token = csrf_token(doctor, f"/consults/{draft.ref}")
    r = doctor.post(f"/consults/{draft.ref}/attachments", data={
        "csrf_token": token, "file": (io.BytesIO(b"%PDF-1.4 broken"), "report.png")},
        content_type="multipart/form-data")
    assert r.status_code == 415
    page = body(r)
    assert "Please check your input" not in page
    assert error_at(page, "upload").startswith("report.png: The file is named “.png” but its content is PDF.")
    assert f'action="/consults/{draft.ref}/attachments"' in page
    assert count(Attachment) == 0


# --- the JSON endpoint used by static/js/forms.js ------------------------------------------------------


def test_json_upload_returns_the_stored_attachment(doctor, draft):
    token = csrf_token(doctor, f"/consults/{draft.ref}/edit")
    r = doctor.post(f"/consults/{draft.ref}/attachments", headers={**JSON, "X-CSRFToken": token}, data={
        "file": (io.BytesIO(png_bytes((40, 30))), "ecg.png"), "description": "12-lead ECG"},
        content_type="multipart/form-data")
    assert r.status_code == 201, r.get_data(as_text=True)
    item = r.get_json()
    stored = db.session.scalar(select(Attachment))
    assert item == {
        "id": stored.id, "name": "ecg.png", "content_type": "image/png", "size": stored.size_bytes,
        "size_text": "1 KB", "description": "12-lead ECG", "is_image": True, "width": 40, "height": 30,
        "page_count": None, "url": f"/consults/{draft.ref}/attachments/{stored.id}",
    }


def test_json_upload_without_csrf_is_refused_and_stores_nothing(doctor, draft):
    r = doctor.post(f"/consults/{draft.ref}/attachments", headers=JSON, data={
        "file": (io.BytesIO(png_bytes()), "ecg.png")}, content_type="multipart/form-data")
    assert r.status_code == 400
    assert r.get_json()["error"] == "csrf_failed"
    assert count(Attachment) == 0


def test_json_upload_refusal_is_a_json_error(doctor, draft):
    token = csrf_token(doctor, f"/consults/{draft.ref}/edit")
    r = doctor.post(f"/consults/{draft.ref}/attachments", headers={**JSON, "X-CSRFToken": token}, data={
        "file": (io.BytesIO(b"GIF89a..."), "scan.gif")}, content_type="multipart/form-data")
    assert r.status_code == 415
    assert r.get_json() == {"error": "unsupported_file",
                            "message": "Only JPEG or PNG images and PDF documents can be attached."}
    r = doctor.post(f"/consults/{draft.ref}/attachments", headers={**JSON, "X-CSRFToken": token},
                    data={"description": "no file"}, content_type="multipart/form-data")
    assert r.status_code == 422
    assert r.get_json()["message"] == "Choose a file to upload."
    assert count(Attachment) == 0
