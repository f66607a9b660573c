"""Each role's dashboard lists what needs the viewer's own action first, marked; "Updated" is the
last change and the appointment has its own column (issue 10, "Saying the right thing")."""

from __future__ import annotations

import html
import re
from datetime import timedelta

from tests import test_http_consults
from tests.test_http_consults import SHANGHAI, reread, shown, user_client
from webapp.consults import services as consults
from webapp.models import AccountStatus, Urgency, utcnow
from webapp.scheduling import services as scheduling
from webapp.timefmt import local

people = test_http_consults.people  # the fixture: a rural doctor, a cardiologist, a coordinator


def card(response, heading: str) -> str:
    """The HTML of the card whose h2 starts with ``heading``."""
    page = response.get_data(as_text=True)
    start = page.index(f"<h2>{heading}")
    end = page.find('<div class="card', start)
    return page[start:end if end != -1 else None]


def rows(fragment: str) -> list[dict]:
    """Each table row (or list item) of a card: its case title, its action marker, its cells."""
    found = []
    for attrs, body in re.findall(r"<(?:tr|li)([^>]*)>(.*?)</(?:tr|li)>", fragment, re.S):
        if "<th>" in body:
            continue
        cells = [html.unescape(re.sub(r"<[^>]+>", " ", c)).split()
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)]
        marker = re.search(r'<span class="badge action">Your action: (.*?)</span>', body)
        title = re.search(r"<a href=\"/consults/[^\"]+\">(.*?)</a>", body) or re.search(r"<strong>(.*?)</strong>", body)
        found.append({"title": html.unescape(title.group(1)) if title else None,
                      "action": html.unescape(marker.group(1)) if marker else None,
                      "marked": "needs-action" in attrs, "cells": [" ".join(c) for c in cells]})
    return found


def far_slot(specialist, days: int = 3):
    """A free slot a few days ahead (not "soon")."""
    return next(s for s in scheduling.open_slots(specialist) if s.starts_at > utcnow() + timedelta(days=days))


def signed(make, requester, specialist, **case):
    c = make.accepted(requester, specialist, **case)
    consults.save_recommendation(specialist, c.ref, consults.RecommendationData(assessment="A", plan="P"), sign=True)
    return c


def test_rural_dashboard_puts_answers_to_acknowledge_and_drafts_first(app, people, make):
    requester, specialist, _ = people
    acknowledged = signed(make, requester, specialist, chief_complaint="Answered and read")
    consults.acknowledge(requester, acknowledged.ref)
    to_ack = signed(make, requester, specialist, chief_complaint="Answered, not yet read")
    draft = make.draft(requester, chief_complaint="Half-written draft")
    booked = make.requested(requester, chief_complaint="Booked in three days")
    slot = far_slot(specialist)
    consults.accept(specialist, booked.ref, slot.starts_at)
    make.requested(requester, chief_complaint="Waiting for a specialist")
    assert draft and to_ack

    page = user_client(app, requester).get("/")
    assert page.status_code == 200
    assert '<span class="badge action">2 need your action</span>' in page.get_data(as_text=True)
    listed = rows(card(page, "Requests"))
    assert [r["title"] for r in listed] == [
        "Answered, not yet read", "Half-written draft",  # what needs the doctor, marked
        "Waiting for a specialist", "Booked in three days", "Answered and read"]  # then the latest change first
    assert [r["action"] for r in listed] == [
        "Read and acknowledge the answer", "Finish and send the request", None, None, None]
    assert [r["marked"] for r in listed] == [True, True, False, False, False]

    header = re.findall(r"<th>(.*?)</th>", card(page, "Requests"))
    assert header == ["Case", "Specialty", "Urgency", "Status", "Appointment", "Updated"]
    row = next(r for r in listed if r["title"] == "Booked in three days")
    appointment, updated = row["cells"][4], row["cells"][5]
    assert appointment == shown(slot.starts_at, SHANGHAI)
    assert updated != appointment
    assert updated.startswith(local(utcnow(), SHANGHAI).strftime("%a %d %b %Y"))  # changed today, not in 3 days


def test_acknowledging_moves_the_answer_down(app, people, make):
    requester, specialist, _ = people
    make.requested(requester, chief_complaint="Sent later")
    c = signed(make, requester, specialist, chief_complaint="Answered")
    doctor = user_client(app, requester)
    first = rows(card(doctor.get("/"), "Requests"))[0]
    assert (first["title"], first["action"]) == ("Answered", "Read and acknowledge the answer")
    consults.acknowledge(requester, c.ref)
    reread()
    listed = rows(card(doctor.get("/"), "Requests"))
    assert [(r["title"], r["action"]) for r in listed] == [("Answered", None), ("Sent later", None)]


def test_specialist_dashboard_puts_offers_calls_soon_and_answers_to_sign_first(app, people, make):
    requester, specialist, _ = people
    later = make.requested(requester, chief_complaint="Call in three days")
    consults.accept(specialist, later.ref, far_slot(specialist).starts_at)
    make.accepted(requester, specialist, chief_complaint="Written answer due")
    soon = make.requested(requester, chief_complaint="Call within the hour")
    consults.accept(specialist, soon.ref, scheduling.open_slots(specialist)[1].starts_at)
    make.requested(requester, chief_complaint="New offer", urgency=Urgency.ROUTINE)

    page = user_client(app, specialist).get("/")
    assert page.status_code == 200
    offers = rows(card(page, "Requests offered to you"))
    assert [(r["title"], r["action"], r["marked"]) for r in offers] == [("New offer", "Accept or decline", True)]
    active = rows(card(page, "Accepted, awaiting your answer"))
    assert [(r["title"], r["action"]) for r in active] == [
        ("Call within the hour", "Video call soon"), ("Written answer due", "Write and sign the answer"),
        ("Call in three days", None)]
    assert [r["marked"] for r in active] == [True, True, False]


def test_coordinator_dashboard_puts_declined_requests_first_and_marks_registrations(app, people, make):
    requester, specialist, coordinator = people
    make.requested(requester, chief_complaint="Routine, still offered", urgency=Urgency.ROUTINE)
    declined = make.requested(requester, chief_complaint="Everyone declined", urgency=Urgency.ROUTINE)
    consults.decline(specialist, declined.ref, "Not my field")
    make.requested(requester, chief_complaint="Emergency, still offered", urgency=Urgency.EMERGENCY)
    make.rural(status=AccountStatus.PENDING, name="Dr Newcomer")

    page = user_client(app, coordinator).get("/")
    assert page.status_code == 200
    queue = rows(card(page, "Requests without a specialist"))
    assert [(r["title"], r["action"]) for r in queue] == [
        ("Everyone declined", "All offers declined: assign a specialist"),
        ("Emergency, still offered", "No specialist yet: assign or wait"),
        ("Routine, still offered", "No specialist yet: assign or wait")]
    registrations = rows(card(page, "Registrations to verify"))
    assert [(r["title"], r["action"], r["marked"]) for r in registrations] == [
        ("Dr Newcomer", "verify and approve", True)]


def test_the_dashboard_joins_an_open_room_in_one_click(app, people, make, monkeypatch):
    """Once the room is open, each party's "Upcoming consultations" links straight into it (issue 12);
    before it opens, and for a coordinator who is no party, there is no such link."""
    requester, specialist, coordinator = people
    consult = make.scheduled(requester, specialist)
    room = f'href="/consults/{consult.ref}/room"'
    monkeypatch.setitem(app.config, "ROOM_OPENS_MINUTES_BEFORE", 0)  # the booked time lies ahead: not open yet
    for user in (requester, specialist):
        assert room not in card(user_client(app, user).get("/"), "Upcoming consultations")
    monkeypatch.setitem(app.config, "ROOM_OPENS_MINUTES_BEFORE", 24 * 60)  # now it is open
    for user in (requester, specialist):
        upcoming = card(user_client(app, user).get("/"), "Upcoming consultations")
        assert room in upcoming and "Join the room" in upcoming
    assert room not in user_client(app, coordinator).get("/").get_data(as_text=True)
