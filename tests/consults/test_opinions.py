"""Second specialists' signed opinions: who may add one, how it is signed and audited, that it never
changes, and how the consult page shows it under the lead's recommendation (issue 13)."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from tests.conftest import login, post_form
from tests.notifications.conftest import notifications_of
from tests.test_http_consults import flashes
from tests.test_http_consults import text as page_text
from webapp.audit.chain import verify as verify_chain
from webapp.consults import opinions, participants, signing
from webapp.consults import services as consults
from webapp.errors import Forbidden, NotFound, ValidationFailed
from webapp.extensions import db
from webapp.models import AuditEvent, ConsultOpinion, ConsultStatus

ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}


@pytest.fixture
def world(make):
    requester = make.rural(name="Dr Requester")
    lead = make.specialist(name="Dr Lead")
    consult = make.accepted(requester, lead)
    second = make.second_specialist(consult, name="Dr Second")
    trainee = make.trainee(consult, name="Dr Trainee")
    return {"consult": consult, "requester": requester, "lead": lead, "second": second, "trainee": trainee,
            "coordinator": make.coordinator(), "stranger": make.specialist(name="Dr Stranger")}


def refused(exc_type, fn, *args, **kwargs):
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    db.session.rollback()
    return info.value


def sign_recommendation(lead, consult) -> None:
    consults.save_recommendation(lead, consult.ref, consults.RecommendationData(
        assessment="Stable angina", plan="Medical management"), sign=True)


# --- the service -----------------------------------------------------------------------------------


def test_a_second_specialist_signs_an_opinion_hashed_audited_and_announced(world):
    c, second = world["consult"], world["second"]
    opinion = opinions.add_opinion(second, c.ref, "  Agree; add a statin.\nRecheck lipids in 6 weeks.  ")
    db.session.expire_all()
    stored = db.session.get(ConsultOpinion, opinion.id)
    assert stored.text == "Agree; add a statin.\nRecheck lipids in 6 weeks."
    assert stored.author_id == second.id and stored.signed_at is not None
    assert len(stored.content_sha256) == 64 and opinions.verify(stored)
    assert stored.content_sha256 == signing.content_hash(stored)
    [event] = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "opinion.signed")).all()
    assert event.actor_id == second.id and event.consult_id == c.id
    assert event.detail == {"role": "specialist", "sha256": stored.content_sha256}
    assert verify_chain(db.session).ok
    # every other active participant is told, the author is not
    for user in (world["requester"], world["lead"], world["trainee"]):
        [note] = notifications_of(user, "opinion.signed")
        assert note.params == {"by": "Dr Second"} and note.consult_id == c.id
    assert notifications_of(second, "opinion.signed") == []


def test_an_opinion_never_changes_a_further_one_is_a_new_addendum(world):
    c, second = world["consult"], world["second"]
    first = opinions.add_opinion(second, c.ref, "First view")
    first_id, first_hash = first.id, first.content_sha256
    first.text = "Rewritten"
    with pytest.raises(ValueError, match="never changed"):
        db.session.flush()
    db.session.rollback()
    db.session.delete(db.session.get(ConsultOpinion, first_id))
    with pytest.raises(ValueError, match="never changed"):
        db.session.flush()
    db.session.rollback()
    opinions.add_opinion(second, c.ref, "Second view after the echo")
    db.session.expire_all()
    rows = db.session.scalars(select(ConsultOpinion).order_by(ConsultOpinion.id)).all()
    assert [(o.text, o.content_sha256 == first_hash) for o in rows] == [
        ("First view", True), ("Second view after the echo", False)]
    # a row altered behind the application's back no longer matches its signature
    db.session.execute(text("UPDATE consult_opinions SET text = 'forged' WHERE id = :id"), {"id": first_id})
    db.session.commit()
    db.session.expire_all()
    assert not opinions.verify(db.session.get(ConsultOpinion, first_id))


def test_the_same_opinion_sent_twice_is_signed_once(world):
    c, second = world["consult"], world["second"]
    first = opinions.add_opinion(second, c.ref, "Agree: CT angiography first.")
    again = opinions.add_opinion(second, c.ref, "  Agree: CT angiography first.  ")  # a double click, a resent form
    assert again.id == first.id
    assert db.session.scalars(select(ConsultOpinion)).all() == [first]
    assert len(db.session.scalars(select(AuditEvent).where(AuditEvent.action == "opinion.signed")).all()) == 1


def test_the_recommendation_is_signed_by_the_same_mechanism(world):
    c, lead = world["consult"], world["lead"]
    sign_recommendation(lead, c)
    db.session.expire_all()
    rec = consults.by_ref(c.ref).recommendation
    assert rec.content_sha256 == signing.content_hash(rec) and consults.verify_signature(rec)
    assert rec.consult.completed_at == rec.signed_at
    # an invited specialist may still add an opinion once the consult is answered
    opinion = opinions.add_opinion(world["second"], c.ref, "Concur with the lead.")
    assert opinion.consult.status == ConsultStatus.COMPLETED


def test_who_may_not_add_an_opinion(world, make):
    c = world["consult"]
    for who in ("lead", "requester", "trainee"):
        exc = refused(Forbidden, opinions.add_opinion, world[who], c.ref, "My view")
        assert "invited specialist" in exc.message
    refused(NotFound, opinions.add_opinion, world["stranger"], c.ref, "My view")
    refused(Forbidden, opinions.add_opinion, world["coordinator"], c.ref, "My view")
    refused(NotFound, opinions.add_opinion, world["second"], "no-such-ref", "My view")
    # bad input
    refused(ValidationFailed, opinions.add_opinion, world["second"], c.ref, "   ")
    exc = refused(ValidationFailed, opinions.add_opinion, world["second"], c.ref, "x" * (opinions.MAX_LENGTH + 1))
    assert exc.fields == {"text": "too_long"}
    # removed: like any stranger
    participants.remove(world["requester"], c.ref, world["second"].id)
    refused(NotFound, opinions.add_opinion, world["second"], c.ref, "Still here?")
    # an invitation not yet accepted gives no opinion either
    invited = make.specialist(specialty="neurology")
    participants.invite(world["lead"], c.ref, invited.id, "specialist")
    refused(Forbidden, opinions.add_opinion, invited, c.ref, "Before accepting")
    assert db.session.scalars(select(ConsultOpinion)).all() == []


def test_no_opinion_on_a_cancelled_consult(world):
    c = world["consult"]
    consults.cancel(world["requester"], c.ref, "Patient transferred")
    refused(Forbidden, opinions.add_opinion, world["second"], c.ref, "Too late")


def test_only_the_lead_signs_the_recommendation_and_the_referral(world):
    c, second = world["consult"], world["second"]
    data = consults.RecommendationData(assessment="A", plan="P", refer_up=True, refer_reason="PCI")
    refused(Forbidden, consults.save_recommendation, second, c.ref, data, sign=True)
    refused(Forbidden, consults.save_recommendation, second, c.ref, data, sign=False)
    assert consults.by_ref(c.ref).recommendation is None


# --- over HTTP ---------------------------------------------------------------------------------------


def client_of(app, user):
    client = app.test_client()
    assert login(client, user).status_code == 302
    return client


@pytest.mark.usefixtures("isolated_requests")
def test_http_a_second_specialist_adds_an_opinion_shown_under_the_recommendation(app, world):
    c = world["consult"]
    sign_recommendation(world["lead"], c)
    second = client_of(app, world["second"])
    page = second.get(f"/consults/{c.ref}").get_data(as_text=True)
    assert 'id="opinion-form"' in page
    r = post_form(second, f"/consults/{c.ref}/opinions", {"text": "Agree; consider ticagrelor."},
                  token_from=f"/consults/{c.ref}")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/consults/{c.ref}#opinions")
    shown = second.get(f"/consults/{c.ref}")
    assert "Your opinion is signed and shown under the recommendation." in flashes(shown)
    for who in ("requester", "lead", "trainee", "coordinator"):
        body = page_text(client_of(app, world[who]).get(f"/consults/{c.ref}"))
        assert body.index('id="recommendation"') < body.index('id="opinions"') < body.index("Case</h2>")
        assert "Agree; consider ticagrelor." in body
        assert "Opinion signed by Dr Second" in body and "the record matches its signature" in body
        assert 'id="opinion-form"' not in body  # only invited specialists write one


@pytest.mark.usefixtures("isolated_requests")
def test_http_who_may_not_add_an_opinion(app, world):
    c = world["consult"]
    path, back = f"/consults/{c.ref}/opinions", f"/consults/{c.ref}"
    for who, status in (("lead", 403), ("requester", 403), ("trainee", 403), ("coordinator", 403),
                        ("stranger", 404)):
        r = post_form(client_of(app, world[who]), path, {"text": "My view"}, token_from="/")
        assert r.status_code == status, who
    second = client_of(app, world["second"])
    r = post_form(second, path, {"text": "  "}, token_from=back)  # empty: told on the page, nothing stored
    assert r.status_code == 302
    assert "Write your opinion before signing it." in flashes(second.get(back))
    r = post_form(second, path, {"text": "x" * 10_001}, token_from=back, headers={"Accept": "application/json"})
    assert r.status_code == 422 and r.get_json()["error"] == "invalid_input"
    assert second.post(path, data={"text": "no token"}).status_code in (400, 422)
    participants.remove(world["requester"], c.ref, world["second"].id)
    r = post_form(second, path, {"text": "Removed"}, token_from="/")
    assert r.status_code == 404
    db.session.rollback()
    assert db.session.scalars(select(ConsultOpinion)).all() == []


@pytest.mark.usefixtures("isolated_requests")
def test_http_a_second_specialist_cannot_sign_the_recommendation(app, world):
    c = world["consult"]
    second = client_of(app, world["second"])
    assert second.get(f"/consults/{c.ref}/answer").status_code == 403
    r = post_form(second, f"/consults/{c.ref}/answer", {"assessment": "A", "plan": "P", "refer_up": "y",
                                                        "refer_reason": "PCI", "sign": "1"}, token_from="/")
    assert r.status_code == 403
    db.session.rollback()
    assert consults.by_ref(c.ref).recommendation is None


@pytest.mark.usefixtures("isolated_requests")
def test_http_the_opinion_and_its_form_in_chinese(app, world):
    c = world["consult"]
    opinions.add_opinion(world["second"], c.ref, "同意主诊意见。")
    body = page_text(client_of(app, world["second"]).get(f"/consults/{c.ref}", headers=ZH))
    for label in ("第二意见", "意见由 Dr Second", "签署", "您的意见", "签署意见", "不能修改"):
        assert label in body, label
    assert "Second opinions" not in body and "Sign opinion" not in body
    participants_text = page_text(client_of(app, world["requester"]).get(f"/consults/{c.ref}", headers=ZH))
    assert "接受" in participants_text and "accepted " not in participants_text
