"""Booking, reschedule and cancel emails carry an .ics invitation (the feed's UID and SEQUENCE)."""

from __future__ import annotations

from datetime import UTC

from icalendar import Calendar
from sqlalchemy import select

from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import Appointment
from webapp.notifications import delivery
from webapp.scheduling import services as scheduling

COMPLAINT = "Crushing retrosternal pain radiating to the jaw"
HISTORY = "Diabetic, smoker, previous stent in the LAD"
FINDINGS = "Troponin raised, ST depression in V4 to V6"
TREATMENT = "Aspirin 300 mg given at the township clinic"
REASONS = ("Clinic overrun in cardiology", "Patient transferred to the provincial hospital")


def invitation_of(message) -> tuple[Calendar, str]:
    """The one .ics part of a mail, parsed, and its Content-Type method parameter."""
    [part] = [p for p in message.iter_attachments() if p.get_content_type() == "text/calendar"]
    assert part.get_filename() == "invitation.ics"
    return Calendar.from_ical(part.get_content()), part.get_param("method")


def assert_no_clinical_text(message) -> None:
    raw = message.as_string()
    decoded = "".join(str(p.get_content()) for p in message.walk() if not p.is_multipart())
    for text in (COMPLAINT, HISTORY, FINDINGS, TREATMENT, *REASONS):
        assert text not in raw and text not in decoded, text


def test_booking_reschedule_and_cancel_emails_carry_the_invitation(app, make, smtp_server, monkeypatch):
    monkeypatch.setitem(app.config, "PUBLIC_URL", "https://huizhen.example.org")
    rural = make.rural(email="ma@clinic.example")
    spec = make.specialist(email="zhang@hospital.example", timezone="Europe/Berlin")
    consult = make.scheduled(rural, spec, chief_complaint=COMPLAINT, history=HISTORY, findings=FINDINGS,
                             current_treatment=TREATMENT)
    [first] = db.session.scalars(select(Appointment).where(Appointment.consult_id == consult.id)).all()
    delivery.run_once()
    booked = next(m for m in smtp_server.wait_for(rural.email, 2) if "booked" in m["Subject"])
    cal, method = invitation_of(booked)
    [event] = cal.walk("VEVENT")
    uid = str(event["UID"])
    assert method == "REQUEST" and str(cal["METHOD"]) == "REQUEST"
    assert uid == f"consult-{consult.ref}@huizhen" and event["SEQUENCE"] == 0
    assert event.decoded("DTSTART") == first.starts_at and event.decoded("DTSTART").utcoffset().total_seconds() == 0
    assert event.decoded("DTEND") == first.ends_at
    assert f"DTSTART:{first.starts_at.astimezone(UTC):%Y%m%dT%H%M%S}Z" in cal.to_ical().decode()
    assert str(event["SUMMARY"]) == "Huizhen consultation"
    assert str(event["URL"]) == f"https://huizhen.example.org/consults/{consult.ref}"
    assert str(event["ATTENDEE"]) == f"mailto:{rural.email}"
    assert_no_clinical_text(booked)

    new_start = next(s.starts_at for s in scheduling.open_slots(spec) if s.starts_at > first.starts_at)
    consults.reschedule(spec, consult.ref, new_start, REASONS[0])
    delivery.run_once()
    moved = next(m for m in smtp_server.wait_for(rural.email, 3) if "moved" in m["Subject"])
    cal, method = invitation_of(moved)
    [event] = cal.walk("VEVENT")
    assert method == "REQUEST" and str(cal["METHOD"]) == "REQUEST"
    assert str(event["UID"]) == uid and event["SEQUENCE"] == 1 and str(event["STATUS"]) == "CONFIRMED"
    assert event.decoded("DTSTART") == new_start and event.decoded("DTSTART").utcoffset().total_seconds() == 0
    assert_no_clinical_text(moved)

    consults.cancel(rural, consult.ref, REASONS[1])
    delivery.run_once()
    cancelled = next(m for m in smtp_server.wait_for(spec.email, 2) if "cancelled" in m["Subject"])
    cal, method = invitation_of(cancelled)
    [event] = cal.walk("VEVENT")
    assert method == "CANCEL" and str(cal["METHOD"]) == "CANCEL"
    assert str(event["UID"]) == uid and event["SEQUENCE"] == 2 and str(event["STATUS"]) == "CANCELLED"
    assert_no_clinical_text(cancelled)


def test_other_emails_and_an_unbooked_cancel_carry_no_invitation(app, make, smtp_server):
    rural, spec = make.rural(), make.specialist()
    consult = make.accepted(rural, spec)  # accepted without a time: nothing to put in a calendar
    consults.cancel(rural, consult.ref, "No longer needed")
    delivery.run_once()
    mails = smtp_server.wait_for(spec.email, 2)  # offered, then cancelled before any booking
    assert "cancelled" in mails[1]["Subject"]
    assert [list(m.iter_attachments()) for m in mails] == [[], []]
