"""Form errors say the right thing: only what is wrong, once, at its field."""

from __future__ import annotations

import html
import re

from flask_wtf import FlaskForm

from tests import test_http_consults
from tests.test_http_consults import CASE, consult, submit, user_client
from webapp import forms as app_forms
from webapp.models import ConsultStatus

people = test_http_consults.people  # the fixture: a rural doctor, a cardiologist, a coordinator


def field_errors(response, name: str) -> list[str]:
    """The messages shown in the field block (``<div class="field">``, ``has-error`` when refused) that
    holds the input named ``name``."""
    page = response.get_data(as_text=True)
    for block in re.split(r'<div class="field(?: has-error)?">', page)[1:]:
        block = re.split(r'<div class="actions|<p|</form>', block, maxsplit=1)[0]
        if f'name="{name}"' in block:
            if '<ul class="errors">' not in block:
                return []
            errors = block.split('<ul class="errors">', 1)[1].split("</ul>", 1)[0]
            return [html.unescape(m) for m in re.findall(r"<li>(.*?)</li>", errors, re.S)]
    raise AssertionError(f"no field {name} on the page")


def flashes(response) -> list[str]:
    return [html.unescape(m) for m in
            re.findall(r'<div class="flash [a-z]+" role="status">(.*?)</div>', response.get_data(as_text=True))]


def test_signing_without_only_the_referral_reason_says_only_that_at_its_field(app, people, make):
    requester, specialist, _ = people
    c = make.accepted(requester, specialist)
    cardio = user_client(app, specialist)
    r = submit(cardio, f"/consults/{c.ref}/answer", {
        "assessment": "Unstable angina", "plan": "Transfer for angiography", "refer_up": "y",
        "refer_reason": "", "follow_up": "", "sign": "Sign and send"})
    assert r.status_code == 422
    assert flashes(r) == ["To sign, write the reason for referral."]
    assert field_errors(r, "refer_reason") == ["Give the reason for referral."]
    assert field_errors(r, "assessment") == [] and field_errors(r, "plan") == []
    assert "the assessment and the plan" not in r.get_data(as_text=True)
    c = consult(c.ref)
    assert c.status == ConsultStatus.ACCEPTED


def test_signing_an_empty_answer_marks_each_missing_field(app, people, make):
    requester, specialist, _ = people
    c = make.accepted(requester, specialist)
    cardio = user_client(app, specialist)
    r = submit(cardio, f"/consults/{c.ref}/answer", {
        "assessment": "", "plan": "Transfer", "refer_reason": "", "follow_up": "", "sign": "Sign and send"})
    assert r.status_code == 422
    assert flashes(r) == ["To sign, write the assessment."]
    assert field_errors(r, "assessment") == ["Write the assessment."]
    assert field_errors(r, "plan") == [] and field_errors(r, "refer_reason") == []
    r = submit(cardio, f"/consults/{c.ref}/answer", {
        "assessment": "", "plan": "", "refer_reason": "", "follow_up": "", "sign": "Sign and send"})
    assert flashes(r) == ["To sign, write the assessment and the plan."]
    assert field_errors(r, "plan") == ["Write the recommended plan."]


def test_a_temperature_that_is_not_a_number_gets_one_message(app, people):
    requester, _, _ = people
    doctor = user_client(app, requester)
    r = submit(doctor, "/consults/new", {**CASE, "temperature_c": "abc", "save": "Save draft"})
    assert r.status_code == 422
    assert field_errors(r, "temperature_c") == ["Not a valid decimal value."]
    r = submit(doctor, "/consults/new", {**CASE, "spo2": "lots", "weight_kg": "x", "save": "Save draft"})
    assert r.status_code == 422
    assert field_errors(r, "spo2") == ["Not a valid integer value."]
    assert field_errors(r, "weight_kg") == ["Not a valid decimal value."]
    r = submit(doctor, "/consults/new", {**CASE, "temperature_c": "50", "save": "Save draft"})
    assert field_errors(r, "temperature_c") == ["Between 30 and 45 °C."]


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


def test_every_form_of_the_application_keeps_one_message_per_field(app):
    ours = {f for f in _all_subclasses(FlaskForm) if f.__module__.startswith("webapp.")}
    assert len(ours) > 10
    strays = sorted(f"{f.__module__}.{f.__name__}" for f in ours
                    if f is not app_forms.AppForm and not issubclass(f, app_forms.AppForm))
    assert strays == [], "these forms derive from FlaskForm, not webapp.forms.AppForm"

