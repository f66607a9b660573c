"""Property: no form POST ever answers 500, whatever its fields hold.

Every POST route is posted by the user it is meant for (signed in through the login form, with
a valid CSRF token), with its valid form where Hypothesis replaces, drops or repeats fields and
adds unknown ones; values are arbitrary bytes (invalid UTF-8, NUL, surrogates encoded with
surrogatepass), numbers of any size (2⁶⁴, 10²⁰, 1e400, NaN) and long or odd text. After each
request: the status is under 500; a refused request (4xx) left every stored row (the audit log
aside) unchanged; an accepted one stored only what every supported database can hold.

Derandomized and bounded (HUIZHEN_FUZZ_EXAMPLES per form, 25 by default); run it on PostgreSQL
too (TEST_DATABASE_URL).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient
from hypothesis import example, given
from hypothesis import strategies as st

from tests.conftest import PASSWORD, csrf_token, free_port, login
from tests.fuzz.stored import assert_storable, changed_tables, snapshot
from tests.fuzz.strategies import FUZZ, form_fields, form_text, json_like, nasty_text
from tests.test_http_permissions import build_world, case_form, png_bytes, signed
from webapp.extensions import limiter
from webapp.models import AccountStatus, Facility, Partnership
from webapp.scheduling import services as scheduling

pytestmark = pytest.mark.fuzz

CASE_NUMBERS = ("patient_age_years", "bp_systolic", "bp_diastolic", "heart_rate", "respiratory_rate",
                "temperature_c", "spo2", "weight_kg")
# The values the review found crashing the request form, each put in every numeric field.
CRITICAL_NUMBERS = [b"99999999999999999999", b"-99999999999999999999", b"1" + b"0" * 400, b"1e400", b"NaN",
                    b"sNaN", b"-Infinity", b"0x10", "\u0663".encode(), b"\xed\xa0\x80", b"\x00"]


@dataclass
class Target:
    """One form: who posts it, where, and its valid fields."""

    name: str
    actor: str  # requester, specialist, coordinator or anonymous
    path: Callable[[dict], str]
    valid: Callable[[dict], dict]
    numbers: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()


def _slot(w: dict) -> str:
    return scheduling.open_slots(w["specialist"])[1].starts_at.isoformat()


TARGETS = [
    Target("login", "anonymous", lambda w: "/login",
           lambda w: {"email": w["requester"].email, "password": "wrong-password", "remember": "y"}),
    Target("register", "anonymous", lambda w: "/register",
           lambda w: {"full_name": "Dr New", "email": "new@test.example", "password": PASSWORD, "confirm": PASSWORD,
                      "role": "rural_doctor", "facility_id": str(w["facility"].id), "specialty": "",
                      "languages": ["zh-CN", "en"], "licence_number": "123", "timezone": "Asia/Shanghai"},
           numbers=("facility_id",)),
    Target("password", "requester", lambda w: "/account/password",
           lambda w: {"current_password": "not-the-password", "new_password": "another-long-password",
                      "confirm": "another-long-password"}),
    Target("new", "requester", lambda w: "/consults/new", lambda w: {**case_form(), "save": "Save draft"},
           numbers=CASE_NUMBERS, extra=("send",)),
    Target("edit", "requester", lambda w: f"/consults/{w['draft'].ref}/edit",
           lambda w: {**case_form(), "save": "Save draft"}, numbers=CASE_NUMBERS, extra=("send",)),
    Target("submit", "requester", lambda w: f"/consults/{w['draft'].ref}/submit", lambda w: {}),
    Target("accept", "specialist", lambda w: f"/consults/{w['requested'].ref}/accept", lambda w: {"slot": _slot(w)}),
    Target("decline", "specialist", lambda w: f"/consults/{w['requested'].ref}/decline",
           lambda w: {"reason": "Outside my field."}),
    Target("cancel", "requester", lambda w: f"/consults/{w['requested'].ref}/cancel",
           lambda w: {"reason": "Patient transferred."}),
    Target("book", "requester", lambda w: f"/consults/{w['accepted'].ref}/book", lambda w: {"slot": _slot(w)}),
    Target("answer", "specialist", lambda w: f"/consults/{w['accepted'].ref}/answer",
           lambda w: {"assessment": "Stable angina.", "plan": "Beta blocker.", "refer_up": "y",
                      "refer_reason": "Angiography.", "follow_up": "Two weeks.", "save": "Save draft"},
           extra=("sign", "from_notes")),
    Target("acknowledge", "requester", lambda w: f"/consults/{w['signed'].ref}/acknowledge", lambda w: {}),
    Target("availability", "specialist", lambda w: "/availability",
           lambda w: {"windows-0-weekday": "1", "windows-0-start": "480", "windows-0-end": "600",
                      "windows-1-weekday": "3", "windows-1-start": "540", "windows-1-end": "720"},
           numbers=("windows-0-weekday", "windows-0-start", "windows-0-end"),
           extra=("windows-39-weekday", "windows-40-start", "windows-99999999999999999999-end")),
    Target("facility-new", "coordinator", lambda w: "/admin/facilities",
           lambda w: {"name": "New Hospital", "level": "county_hospital", "region": "Gansu"}),
    Target("facility-edit", "coordinator", lambda w: f"/admin/facilities/{w['facility'].id}/edit",
           lambda w: {"name": "Renamed Hospital", "level": "county_hospital", "region": "Gansu"}),
    Target("partnership-new", "coordinator", lambda w: "/admin/partnerships",
           lambda w: {"facility_id": str(w["facility"].id), "partner_id": str(w["partner"].id)},
           numbers=("facility_id", "partner_id")),
    Target("partnership-delete", "coordinator", lambda w: f"/admin/partnerships/{w['partnership'].id}/delete",
           lambda w: {}),
    Target("approve", "coordinator", lambda w: f"/admin/registrations/{w['pending'].id}/approve", lambda w: {}),
    Target("reject", "coordinator", lambda w: f"/admin/registrations/{w['pending'].id}/reject",
           lambda w: {"note": "Licence not found."}),
    Target("assign", "coordinator", lambda w: f"/admin/consults/{w['requested'].ref}/assign",
           lambda w: {"specialist_id": str(w["specialist"].id)}, numbers=("specialist_id",)),
    Target("notification-preferences", "specialist", lambda w: "/notifications/preferences",
           lambda w: {"muted": ["email:chat.message", "webhook:consult.offered"], "quiet_start": "22:00",
                      "quiet_end": "07:00"}),
    Target("notifications-read-all", "specialist", lambda w: "/notifications/read-all", lambda w: {}),
    Target("logout", "requester", lambda w: "/logout", lambda w: {}),
]


@pytest.fixture
def world(app, make, monkeypatch) -> dict:
    """Users of every role and a consult in every state a form acts on."""
    monkeypatch.setattr(limiter, "enabled", False)  # registration allows 20 an hour; the fuzz posts more
    w = build_world(make)
    w_dict = {"requester": w.requester, "specialist": w.specialist, "coordinator": w.coordinator,
              "facility": w.requester.facility, "partner": make.facility(name="Partner Hospital")}
    w_dict["partnership"] = make.partnership(w_dict["facility"], w_dict["partner"])
    w_dict["pending"] = make.rural(status=AccountStatus.PENDING)
    w_dict["draft"] = make.draft(w.requester)
    w_dict["requested"] = make.requested(w.requester)
    w_dict["accepted"] = make.accepted(w.requester, w.specialist)
    w_dict["signed"] = signed(w)
    assert isinstance(w_dict["facility"], Facility) and isinstance(w_dict["partnership"], Partnership)
    return w_dict


def client_as(app, w: dict, actor: str) -> FlaskClient:
    client = app.test_client()
    if actor != "anonymous":
        assert login(client, w[actor]).status_code == 302
    return client


def check_response(response, before: dict, allowed: tuple[int, ...] = ()) -> None:
    status = response.status_code
    assert status < 500 or status in allowed, (status, response.get_data(as_text=True)[:300])
    after = snapshot()
    if status >= 400:
        assert changed_tables(before, after) == [], (status, changed_tables(before, after))
    else:
        assert_storable(changed_tables(before, after))


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_no_form_post_gives_a_server_error(app, world, target):
    client = client_as(app, world, target.actor)
    path = target.path(world)
    valid = target.valid(world)
    token = {"value": csrf_token(client, "/login" if target.actor == "anonymous" else "/")}

    @FUZZ
    @given(pairs=form_fields(valid, numbers=target.numbers, extra=target.extra))
    def check(pairs):
        before = snapshot()
        body = urlencode([("csrf_token", token["value"]), *pairs])
        response = client.post(path, data=body, content_type="application/x-www-form-urlencoded")
        check_response(response, before)
        if response.status_code == 302 and response.headers["Location"].startswith("/login"):
            client_as_again = login(client, world[target.actor]) if target.actor != "anonymous" else None
            assert client_as_again is None or client_as_again.status_code in (302, 401)
            token["value"] = csrf_token(client, "/login" if target.actor == "anonymous" else "/")

    for name in target.numbers:  # the review's numbers, in every numeric field of this form
        for value in CRITICAL_NUMBERS:
            spoiled = [(k, v.encode() if isinstance(v, str) else v) for k, v in valid.items()
                       if k != name and not isinstance(v, list)]
            check = example(pairs=[*spoiled, (name, value)])(check)
    check()


@pytest.mark.usefixtures("world")
@FUZZ
@given(filename=nasty_text, content=st.one_of(st.binary(max_size=64), st.builds(lambda b: png_bytes()[:40] + b,
                                                                              st.binary(max_size=32))),
       description=st.one_of(nasty_text, st.text(max_size=300)), back=st.one_of(st.just("edit"), nasty_text))
def test_no_upload_gives_a_server_error(app, world, filename, content, description, back):
    client = client_as(app, world, "requester")
    before = snapshot()
    data = {"csrf_token": csrf_token(client, "/"), "file": (io.BytesIO(content), filename.encode(
        "utf-8", "surrogatepass").decode("utf-8", "replace")),
        "description": description.encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
        "back": back.encode("utf-8", "surrogatepass").decode("utf-8", "replace")}
    response = client.post(f"/consults/{world['accepted'].ref}/attachments", data=data,
                           content_type="multipart/form-data")
    check_response(response, before)


@pytest.mark.usefixtures("world")
@FUZZ
@given(payload=st.one_of(json_like, st.fixed_dictionaries({"type": st.sampled_from(["offer", "answer"]),
                                                           "sdp": st.one_of(nasty_text, st.builds(
                                                               lambda t: "v=0\r\n" + t, nasty_text))})),
       raw=st.one_of(st.none(), form_text))
@example(payload={"type": "offer", "sdp": "v=0\r\n\ud800"}, raw=None)
@example(payload={"type": "offer", "sdp": "v=0\r\n\x00"}, raw=None)
def test_no_precall_offer_gives_a_server_error(app, world, payload, raw):
    app.config.update(MEDIA_WORKER_URL=f"http://127.0.0.1:{free_port()}", MEDIA_WORKER_TOKEN="x")
    client = client_as(app, world, "requester")
    before = snapshot()
    body = raw if raw is not None else json.dumps(payload).encode()
    response = client.post("/precall/offer", data=body, content_type="application/json",
                           headers={"X-CSRFToken": csrf_token(client, "/precall"), "Accept": "application/json"})
    check_response(response, before, allowed=(503,))  # a well-formed offer: the worker is not running
