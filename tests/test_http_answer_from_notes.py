"""The recommendation form offers to start from the shared notes' Assessment and Plan (issue 10)."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import func, select

from tests import test_http_consults
from tests.notes.peers import Peer
from tests.test_http_consults import reread, submit, text, user_client
from webapp.extensions import db
from webapp.models import Recommendation
from webapp.notes import services as notes

people = test_http_consults.people  # the fixture: a rural doctor, a cardiologist, a coordinator

ASSESSMENT = "Likely stable angina; ECG changes on exertion only."
PLAN = "Start a beta blocker, refer for an exercise test within two weeks."


@pytest.fixture(autouse=True)
def fresh_notes(app):
    """Empty tables mean empty documents: drop documents cached by earlier tests."""
    notes.forget()
    yield
    notes.forget()


def write_notes(user, consult, **sections: str) -> None:
    """Type into the shared notes as a party's browser would (one CRDT update per section)."""
    peer = Peer("writer")
    for section, value in sections.items():
        notes.apply_update(user, consult, peer.append(section, value))


def textarea(response, name: str) -> str:
    found = re.search(rf'<textarea[^>]*name="{name}"[^>]*>(.*?)</textarea>', response.get_data(as_text=True), re.S)
    assert found, f"no textarea {name}"
    return html.unescape(found.group(1)).strip()


def recommendations() -> int:
    reread()
    return db.session.scalar(select(func.count()).select_from(Recommendation))


def test_start_from_the_notes_fills_the_empty_fields(app, people, make):
    requester, specialist, _ = people
    c = make.accepted(requester, specialist)
    write_notes(requester, c, assessment=ASSESSMENT + "\n", plan=PLAN)
    cardio = user_client(app, specialist)

    page = cardio.get(f"/consults/{c.ref}/answer")
    assert "The shared notes have an Assessment and a Plan." in text(page)
    assert '<button class="btn secondary small" type="submit" name="from_notes" value="empty">' in text(page)

    r = submit(cardio, f"/consults/{c.ref}/answer", {"assessment": "", "plan": "", "refer_reason": "",
                                                     "follow_up": "Review in a week", "from_notes": "empty"})
    assert r.status_code == 200
    assert textarea(r, "assessment") == ASSESSMENT and textarea(r, "plan") == PLAN
    assert textarea(r, "follow_up") == "Review in a week"  # what was typed stays
    assert "Filled the assessment and the plan from the shared notes." in text(r)
    assert recommendations() == 0  # nothing saved until the specialist saves or signs


def test_typed_text_is_kept_until_the_specialist_asks_to_replace_it(app, people, make):
    requester, specialist, _ = people
    c = make.accepted(requester, specialist)
    write_notes(specialist, c, assessment=ASSESSMENT, plan=PLAN)
    cardio = user_client(app, specialist)

    r = submit(cardio, f"/consults/{c.ref}/answer", {"assessment": "", "plan": "My own plan",
                                                     "refer_reason": "", "follow_up": "", "from_notes": "empty"})
    assert r.status_code == 200
    assert textarea(r, "assessment") == ASSESSMENT
    assert textarea(r, "plan") == "My own plan"
    body = text(r)
    assert "Your recommended plan was kept: the notes' Plan says something else." in body
    assert PLAN in body  # shown, to compare
    assert 'name="from_notes" value="plan">Replace my text with the notes\' plan</button>' in body
    assert 'value="assessment">Replace' not in body

    r = submit(cardio, f"/consults/{c.ref}/answer", {"assessment": "Edited: " + ASSESSMENT, "plan": "My own plan",
                                                     "refer_reason": "", "follow_up": "", "from_notes": "plan"})
    assert r.status_code == 200
    assert textarea(r, "plan") == PLAN
    assert textarea(r, "assessment") == "Edited: " + ASSESSMENT  # only the field asked for
    assert recommendations() == 0


def test_no_offer_without_notes_and_a_bad_choice_is_refused(app, people, make):
    requester, specialist, _ = people
    c = make.accepted(requester, specialist)
    cardio = user_client(app, specialist)
    page = cardio.get(f"/consults/{c.ref}/answer")
    assert page.status_code == 200 and 'name="from_notes"' not in page.get_data(as_text=True)
    write_notes(requester, c, history="Only the history is written.")
    assert 'name="from_notes"' not in cardio.get(f"/consults/{c.ref}/answer").get_data(as_text=True)

    write_notes(requester, c, plan=PLAN)
    page = cardio.get(f"/consults/{c.ref}/answer")
    assert "The shared notes have a Plan." in text(page)
    r = submit(cardio, f"/consults/{c.ref}/answer", {"assessment": "", "plan": "", "from_notes": "history"})
    assert r.status_code == 422
    assert "Choose the assessment or the plan to replace." in text(r)
    assert recommendations() == 0
