"""The consult permission matrix over HTTP: who may see and do what, and what everyone else meets.

Parties and coordinators act as the policy allows. Anyone who may not see a consult gets the
same 404 as for a consult that does not exist (never a 403 that would confirm it exists, never
a 500), and the refusal is stored as a ``consult.access_denied`` audit entry. Anonymous callers
are sent to the sign-in page.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import func, select

from tests.conftest import Factory, csrf_token, login, post_form
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import (
    Attachment,
    AuditEvent,
    Consult,
    ConsultOffer,
    ConsultStatus,
    OfferStatus,
    User,
)
from webapp.scheduling import services as scheduling

pytestmark = pytest.mark.usefixtures("isolated_requests")

ACTORS = ("requester", "other_rural", "specialist", "other_specialist", "second_specialist", "trainee",
          "coordinator", "anonymous")
COMPLAINT = "Crushing chest pain at rest"


def png_bytes(size: tuple[int, int] = (8, 8), colour: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def message_of(body: str) -> str:
    """The message an error page or a flash shows (for assertion output)."""
    found = re.findall(r'<p class="lede">(.*?)</p>|<div class="flash [a-z]+" role="status">(.*?)</div>', body)
    return " | ".join(a or b for a, b in found) or body[:200]


def reread() -> None:
    """End the test's own read transaction so the next query sees what the requests committed."""
    db.session.rollback()
    db.session.expire_all()


def case_form(**overrides) -> dict[str, str]:
    """A complete case form as the browser posts it."""
    data = {
        "specialty": "cardiology", "urgency": "urgent", "patient_age_years": "60",
        "patient_sex": "male", "chief_complaint": COMPLAINT,
        "history": "Three weeks of exertional chest pain.", "findings": "ST depression V4-V6",
        "current_treatment": "", "question": "Angiography or medical management?",
        "preferred_times": "", "bp_systolic": "", "bp_diastolic": "", "heart_rate": "",
        "respiratory_rate": "", "temperature_c": "", "spo2": "", "weight_kg": "",
    }
    data.update(overrides)
    return data


@dataclass
class World:
    make: Factory
    requester: User
    other_rural: User
    specialist: User
    other_specialist: User
    coordinator: User
    second_specialist: User  # invited into accepted consults for an opinion (with_team)
    trainee: User  # a doctor of the requester's facility, invited to watch and learn (with_team)

    def user(self, actor: str) -> User | None:
        return None if actor == "anonymous" else getattr(self, actor)


def build_world(make: Factory) -> World:
    """A requester, the cardiologist the request is offered to (and later assigned), a
    dermatologist who is never offered it, another rural doctor and a coordinator; a neurologist
    and a doctor of the requester's facility who join accepted consults (with_team)."""
    clinic = make.facility()
    world = World(
        make=make,
        requester=make.rural(email="requester@test.example", timezone="Asia/Shanghai", facility=clinic),
        other_rural=make.rural(email="other.rural@test.example"),
        specialist=make.specialist(specialty="cardiology", email="cardio@test.example",
                                   timezone="Europe/London"),
        other_specialist=make.specialist(specialty="dermatology", email="derma@test.example"),
        coordinator=make.coordinator(email="coord@test.example"),
        second_specialist=make.specialist(specialty="neurology", email="neuro@test.example"),
        trainee=make.rural(email="trainee@test.example", facility=clinic),
    )
    make.availability(world.specialist)
    make.availability(world.other_specialist)
    return world


def with_team(world: World, consult: Consult) -> Consult:
    """The second specialist and the trainee take part in the (accepted) consult."""
    world.make.participant(consult, world.second_specialist, "specialist")
    world.make.participant(consult, world.trainee, "trainee")
    return consult


def scheduled(make, requester, specialist, **overrides):
    """Like ``make.scheduled`` but on the second free slot: the first one can slip inside the
    minimum booking lead time while the test runs (when the clock passes :15 or :45)."""
    c = make.requested(requester, **overrides)
    return consults.accept(specialist, c.ref, scheduling.open_slots(specialist)[1].starts_at)


def client_for(app, world: World, actor: str) -> FlaskClient:
    client = app.test_client()
    user = world.user(actor)
    if user is not None:
        r = login(client, user)
        assert r.status_code == 302, f"{actor} could not sign in"
    return client


def with_attachment(world: World, consult: Consult) -> Attachment:
    return consults.add_attachment(world.requester, consult.ref, io.BytesIO(png_bytes()), "ecg.png", "ECG")


def signed(world: World) -> Consult:
    c = world.make.accepted(world.requester, world.specialist, chief_complaint=COMPLAINT)
    consults.save_recommendation(world.specialist, c.ref, consults.RecommendationData(
        assessment="Unstable angina.", plan="Transfer for angiography."), sign=True)
    return c


def snapshot(ref: str) -> dict:
    """The stored state of a consult that any action would change."""
    reread()
    c = db.session.scalar(select(Consult).where(Consult.ref == ref))
    rec = c.recommendation
    return {
        "status": c.status, "specialist_id": c.specialist_id, "version": c.version,
        "chief_complaint": c.chief_complaint, "attachments": len(c.attachments),
        "appointment": c.appointment.id if c.appointment else None,
        "offers": [(o.specialist_id, o.status) for o in c.offers],
        "signed_at": rec.signed_at if rec else None,
        "acknowledged_at": rec.acknowledged_at if rec else None,
        "opinions": len(c.opinions),
    }


def denied_rows(user: User | None, consult_ref: str) -> list[AuditEvent]:
    reread()
    consult_id = db.session.scalar(select(Consult.id).where(Consult.ref == consult_ref))
    query = select(AuditEvent).where(AuditEvent.action == "consult.access_denied",
                                     AuditEvent.consult_id == consult_id)
    if user is not None:
        query = query.where(AuditEvent.actor_id == user.id)
    return list(db.session.scalars(query))


# --- the actions ----------------------------------------------------------------------------------


@dataclass
class Action:
    """How to put a consult in the state the action needs, do it over HTTP, and see its effect."""

    setup: Callable[[World], tuple[Consult, dict]]
    call: Callable[[FlaskClient, Consult, dict], object]
    effect: Callable[[dict, dict], bool]  # (before, after) -> whether the action took effect
    expect: dict[str, str]


A, F, H, L = "allowed", "forbidden", "hidden", "login"


def _scheduled_with_file(world: World):
    c = with_team(world, scheduled(world.make, world.requester, world.specialist, chief_complaint=COMPLAINT))
    att = with_attachment(world, c)
    return c, {"attachment_id": att.id}


def _requested(world: World):
    return world.make.requested(world.requester, chief_complaint=COMPLAINT), {}


def _accepted(world: World):
    c = with_team(world, world.make.accepted(world.requester, world.specialist, chief_complaint=COMPLAINT))
    slot = scheduling.open_slots(world.specialist)[1].starts_at.isoformat()
    return c, {"slot": slot}


def _scheduled(world: World):
    return with_team(world, scheduled(world.make, world.requester, world.specialist, chief_complaint=COMPLAINT)), {}


def _signed(world: World):
    c = with_team(world, world.make.accepted(world.requester, world.specialist, chief_complaint=COMPLAINT))
    consults.save_recommendation(world.specialist, c.ref, consults.RecommendationData(
        assessment="Unstable angina.", plan="Transfer for angiography."), sign=True)
    return c, {}


def _upload(client: FlaskClient, c: Consult | None, extra: dict, url: str | None = None):
    token = csrf_token(client, "/")
    return client.post(url or f"/consults/{c.ref}/attachments", data={
        "csrf_token": token, "description": "X-ray",
        "file": (io.BytesIO(png_bytes(colour="blue")), "xray.png"),
    }, content_type="multipart/form-data")


def _unchanged(before: dict, after: dict) -> bool:
    return before == after


ACTIONS: dict[str, Action] = {
    "view": Action(
        _scheduled_with_file,
        lambda cl, c, x: cl.get(f"/consults/{c.ref}"),
        _unchanged,
        dict(requester=A, other_rural=H, specialist=A, other_specialist=H, second_specialist=A, trainee=A,
             coordinator=A, anonymous=L),
    ),
    "edit_page": Action(
        _requested,
        lambda cl, c, x: cl.get(f"/consults/{c.ref}/edit"),
        _unchanged,
        dict(requester=A, other_rural=H, specialist=F, other_specialist=H, second_specialist=H, trainee=H,
             coordinator=F, anonymous=L),
    ),
    "edit_save": Action(
        _requested,
        lambda cl, c, x: post_form(cl, f"/consults/{c.ref}/edit",
                                   case_form(chief_complaint="Edited complaint", save="Save draft")),
        lambda b, a: a["chief_complaint"] == "Edited complaint",
        dict(requester=A, other_rural=H, specialist=F, other_specialist=H, second_specialist=H, trainee=H,
             coordinator=F, anonymous=L),
    ),
    "download": Action(
        _scheduled_with_file,
        lambda cl, c, x: cl.get(f"/consults/{c.ref}/attachments/{x['attachment_id']}"),
        _unchanged,
        dict(requester=A, other_rural=H, specialist=A, other_specialist=H, second_specialist=A, trainee=A,
             coordinator=A, anonymous=L),
    ),
    "upload": Action(
        _scheduled,
        _upload,
        lambda b, a: a["attachments"] == b["attachments"] + 1,
        dict(requester=A, other_rural=H, specialist=A, other_specialist=H, second_specialist=A, trainee=F,
             coordinator=F, anonymous=L),
    ),
    "accept": Action(
        _requested,
        lambda cl, c, x: post_form(cl, f"/consults/{c.ref}/accept", {"slot": ""}),
        lambda b, a: a["status"] == ConsultStatus.ACCEPTED,
        dict(requester=F, other_rural=H, specialist=A, other_specialist=H, second_specialist=H, trainee=H,
             coordinator=F, anonymous=L),
    ),
    "decline": Action(
        _requested,
        lambda cl, c, x: post_form(cl, f"/consults/{c.ref}/decline", {"reason": "Outside my practice."}),
        lambda b, a: a["offers"][0][1] == OfferStatus.DECLINED and a["status"] == ConsultStatus.DECLINED,
        dict(requester=F, other_rural=H, specialist=A, other_specialist=H, second_specialist=H, trainee=H,
             coordinator=F, anonymous=L),
    ),
    "sign": Action(
        _accepted,
        lambda cl, c, x: post_form(cl, f"/consults/{c.ref}/answer", {
            "assessment": "Unstable angina.", "plan": "Transfer for angiography.",
            "follow_up": "", "refer_reason": "", "sign": "Sign and send"}),
        lambda b, a: a["status"] == ConsultStatus.COMPLETED and a["signed_at"] is not None,
        dict(requester=F, other_rural=H, specialist=A, other_specialist=H, second_specialist=F, trainee=F,
             coordinator=F, anonymous=L),
    ),
    "book": Action(
        _accepted,
        lambda cl, c, x: post_form(cl, f"/consults/{c.ref}/book", {"slot": x["slot"]}),
        lambda b, a: a["status"] == ConsultStatus.SCHEDULED and a["appointment"] is not None,
        dict(requester=A, other_rural=H, specialist=A, other_specialist=H, second_specialist=F, trainee=F,
             coordinator=F, anonymous=L),
    ),
    "cancel": Action(
        _scheduled,
        lambda cl, c, x: post_form(cl, f"/consults/{c.ref}/cancel", {"reason": "Patient recovered."}),
        lambda b, a: a["status"] == ConsultStatus.CANCELLED and a["appointment"] is None,
        dict(requester=A, other_rural=H, specialist=F, other_specialist=H, second_specialist=F, trainee=F,
             coordinator=A, anonymous=L),
    ),
    "acknowledge": Action(
        _signed,
        lambda cl, c, x: post_form(cl, f"/consults/{c.ref}/acknowledge"),
        lambda b, a: a["acknowledged_at"] is not None,
        dict(requester=A, other_rural=H, specialist=F, other_specialist=H, second_specialist=F, trainee=F,
             coordinator=F, anonymous=L),
    ),
    "add_opinion": Action(  # an invited specialist's signed addendum; the lead signs the recommendation
        _signed,
        lambda cl, c, x: post_form(cl, f"/consults/{c.ref}/opinions", {"text": "Agree with the transfer."}),
        lambda b, a: a["opinions"] == b["opinions"] + 1,
        dict(requester=F, other_rural=H, specialist=F, other_specialist=H, second_specialist=A, trainee=F,
             coordinator=F, anonymous=L),
    ),
}

MATRIX = [(action, actor) for action in ACTIONS for actor in ACTORS]


@pytest.mark.parametrize(("action", "actor"), MATRIX, ids=[f"{a}-{b}" for a, b in MATRIX])
def test_permission_matrix(app, make, action, actor):
    world = build_world(make)
    spec = ACTIONS[action]
    consult, extra = spec.setup(world)
    ref = consult.ref
    client = client_for(app, world, actor)
    before = snapshot(ref)
    denied_before = len(denied_rows(None, ref))

    response = spec.call(client, consult, extra)

    after = snapshot(ref)
    expected = spec.expect[actor]
    status = response.status_code
    body = response.get_data(as_text=True) if response.mimetype.startswith("text/") else ""
    shown = message_of(body)
    assert status != 500, shown
    if expected == A:
        assert status in (200, 302), (status, shown)
        if status == 302:
            assert urlsplit(response.headers["Location"]).path != "/login"
        if action in ("view", "edit_page"):
            assert COMPLAINT in body
        if action == "download":
            assert response.mimetype == "image/png"
            assert response.data.startswith(b"\x89PNG")
        assert spec.effect(before, after), (before, after)
        assert len(denied_rows(None, ref)) == denied_before, "an allowed action was audited as denied"
    elif expected == F:
        assert status == 403, (status, shown)
        assert after == before
        assert len(denied_rows(None, ref)) == denied_before
    elif expected == H:
        assert status == 404, (status, shown)
        assert "This page does not exist" in body or "No such consult" in body
        assert COMPLAINT not in body, "a refused caller saw case data"
        assert after == before, "a refused action changed the consult"
        rows = denied_rows(world.user(actor), ref)
        assert len(rows) == 1, f"expected one consult.access_denied entry for {actor}, got {len(rows)}"
        assert rows[0].actor_email == world.user(actor).email
    else:
        assert status == 302, (status, shown)
        assert urlsplit(response.headers["Location"]).path == "/login"
        assert after == before
        assert len(denied_rows(None, ref)) == denied_before


# --- unknown references and mismatched ids -------------------------------------------------------------

UNKNOWN_REF = "AAAAAAAAAAAAAAAA"


@pytest.mark.parametrize("actor", ["requester", "specialist", "coordinator"])
@pytest.mark.parametrize("path,method", [
    ("/consults/{ref}", "get"),
    ("/consults/{ref}/edit", "get"),
    ("/consults/{ref}/edit", "post"),
    ("/consults/{ref}/attachments/1", "get"),
    ("/consults/{ref}/attachments", "post"),
    ("/consults/{ref}/accept", "get"),
    ("/consults/{ref}/accept", "post"),
    ("/consults/{ref}/decline", "post"),
    ("/consults/{ref}/book", "get"),
    ("/consults/{ref}/book", "post"),
    ("/consults/{ref}/open-slots", "get"),
    ("/consults/{ref}/answer", "get"),
    ("/consults/{ref}/answer", "post"),
    ("/consults/{ref}/acknowledge", "post"),
    ("/consults/{ref}/cancel", "post"),
    ("/consults/{ref}/submit", "post"),
    ("/consults/{ref}/opinions", "post"),
])
def test_unknown_reference_is_404_for_everyone(app, make, actor, path, method):
    world = build_world(make)
    scheduled(world.make, world.requester, world.specialist)  # a real consult exists elsewhere
    client = client_for(app, world, actor)
    url = path.format(ref=UNKNOWN_REF)
    if method == "get":
        r = client.get(url)
    elif url.endswith("/attachments"):
        r = _upload(client, None, {}, url=url)
    else:
        r = post_form(client, url, {"reason": "x", "slot": "", "assessment": "a", "plan": "p"})
    assert r.status_code == 404, (r.status_code, r.get_data(as_text=True)[:500])


def _untimed(page: bytes) -> bytes:
    """The page with its CSRF tokens' signed time taken out (the same session signs the same token)."""
    return re.sub(rb'(name="csrf_token" value=")[^"]*"', rb'\1-"', page)


def test_hidden_consult_and_unknown_reference_look_the_same(app, make):
    """A non-party cannot tell an existing consult from a made-up reference."""
    world = build_world(make)
    c = scheduled(world.make, world.requester, world.specialist, chief_complaint=COMPLAINT)
    client = client_for(app, world, "other_rural")
    hidden = client.get(f"/consults/{c.ref}")
    unknown = client.get(f"/consults/{UNKNOWN_REF}")
    assert hidden.status_code == unknown.status_code == 404
    # the CSRF token carries a timestamp to the second: the two pages may straddle one
    assert _untimed(hidden.get_data()) == _untimed(unknown.get_data())

    api = {"Accept": "application/json"}
    hidden = client.get(f"/consults/{c.ref}", headers=api)
    unknown = client.get(f"/consults/{UNKNOWN_REF}", headers=api)
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.get_json() == unknown.get_json()
    assert hidden.get_json()["error"] == "not_found"


def test_attachment_of_another_consult_is_404(app, make):
    world = build_world(make)
    mine = scheduled(world.make, world.requester, world.specialist, chief_complaint=COMPLAINT)
    my_file = with_attachment(world, mine)
    theirs = world.make.requested(world.other_rural, chief_complaint="Someone else's patient")
    their_file = consults.add_attachment(world.other_rural, theirs.ref, io.BytesIO(png_bytes()), "other.png")
    second_of_mine = world.make.draft(world.requester)
    second_file = consults.add_attachment(world.requester, second_of_mine.ref, io.BytesIO(png_bytes()), "x.png")

    for actor in ("requester", "specialist", "coordinator"):
        client = client_for(app, world, actor)
        assert client.get(f"/consults/{mine.ref}/attachments/{my_file.id}").status_code == 200
        r = client.get(f"/consults/{mine.ref}/attachments/{their_file.id}")
        assert r.status_code == 404, actor
        assert not r.data.startswith(b"\x89PNG")
        r = client.get(f"/consults/{mine.ref}/attachments/{second_file.id}")
        assert r.status_code == 404, actor
        assert client.get(f"/consults/{mine.ref}/attachments/999999").status_code == 404


def test_offered_specialist_sees_request_until_someone_else_takes_it(app, make):
    world = build_world(make)
    second = make.specialist(specialty="cardiology", email="cardio2@test.example")
    c = world.make.requested(world.requester, chief_complaint=COMPLAINT)
    reread()
    assert {o.specialist_id for o in db.session.scalars(
        select(ConsultOffer).where(ConsultOffer.consult_id == c.id))} == {world.specialist.id, second.id}

    client = app.test_client()
    login(client, second)
    r = client.get(f"/consults/{c.ref}")
    assert r.status_code == 200 and COMPLAINT in r.get_data(as_text=True)
    assert client.get(f"/consults/{c.ref}/accept").status_code == 200

    reread()
    consults.accept(world.specialist, c.ref)

    r = client.get(f"/consults/{c.ref}")
    assert r.status_code == 404
    assert COMPLAINT not in r.get_data(as_text=True)
    assert len(denied_rows(second, c.ref)) == 1


def test_refusals_are_listed_in_the_audit_log(app, make):
    world = build_world(make)
    c = scheduled(world.make, world.requester, world.specialist, chief_complaint=COMPLAINT)
    snoop = client_for(app, world, "other_specialist")
    assert snoop.get(f"/consults/{c.ref}").status_code == 404
    assert post_form(snoop, f"/consults/{c.ref}/answer", {"assessment": "a", "plan": "p",
                                                          "sign": "Sign and send"}).status_code == 404

    coordinator = client_for(app, world, "coordinator")
    page = coordinator.get(f"/admin/audit?action=consult.access_denied&consult={c.ref}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert text.count("consult.access_denied") >= 2
    assert world.other_specialist.email in text
    reread()
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "consult.access_denied", AuditEvent.actor_id == world.other_specialist.id)) == 2
