"""Participants are told: an invitation (in-app, live and by mail, with a link to answer it), the
answer to whoever invited, a removal to whoever was removed; none for a change rolled back (issue 13)."""

from __future__ import annotations

import pytest

from tests.conftest import login
from tests.notifications.conftest import CommitFailed, counts, notifications_of
from webapp.consults import participants
from webapp.extensions import db
from webapp.i18n import speaking
from webapp.notifications import delivery, texts


@pytest.fixture
def world(make):
    requester = make.rural(name="Dr Requester", email="requester@clinic.example")
    lead = make.specialist(name="Dr Lead", email="lead@hospital.example")
    consult = make.accepted(requester, lead)
    neuro = make.specialist(specialty="neurology", name="Dr Neuro", email="neuro@hospital.example")
    local = make.rural(facility=requester.facility, name="Dr Local", email="local@clinic.example")
    return {"consult": consult, "requester": requester, "lead": lead, "neuro": neuro, "local": local,
            "coordinator": make.coordinator(name="Coordinator Wang")}


def test_an_invitation_tells_the_invitee_in_app_and_by_mail_with_the_link_to_answer(app, world):
    c, lead, neuro = world["consult"], world["lead"], world["neuro"]
    participants.invite(lead, c.ref, neuro.id, "specialist")
    [note] = notifications_of(neuro, "participant.invited")
    assert note.params == {"by": "Dr Lead", "role": "specialist"} and note.consult_id == c.id
    assert [d.channel for d in note.deliveries] == ["email"]
    assert notifications_of(lead, "participant.invited") == []
    with speaking("en"):
        assert texts.title(note.kind, note.params) == "Dr Lead invites you to give a second opinion on a consult"
    with app.test_request_context("/"):
        assert texts.link(note.kind, c.ref) == f"/consults/{c.ref}"  # where the invitation is answered
    participants.invite(world["requester"], c.ref, world["local"].id, "trainee")
    [trainee_note] = notifications_of(world["local"], "participant.invited")
    with speaking("en"):
        assert texts.title(trainee_note.kind, trainee_note.params) == (
            "Dr Requester invites you to a consult as a trainee, to watch and learn")
    with speaking("zh_CN"):
        assert texts.title(note.kind, note.params) == "Dr Lead 邀请您为一次会诊提供第二意见"
        assert texts.title(trainee_note.kind, trainee_note.params) == "Dr Requester 邀请您以学员身份参与会诊，观摩学习"


def test_the_answer_is_told_to_whoever_invited(world):
    c, lead, requester, neuro, local = (world[k] for k in ("consult", "lead", "requester", "neuro", "local"))
    participants.invite(lead, c.ref, neuro.id, "specialist")
    participants.invite(requester, c.ref, local.id, "trainee")
    participants.respond(neuro, c.ref, accept=True)
    participants.respond(local, c.ref, accept=False)
    [accepted] = notifications_of(lead, "participant.accepted")
    assert accepted.params == {"name": "Dr Neuro", "role": "specialist"}
    [declined] = notifications_of(requester, "participant.declined")
    assert declined.params == {"name": "Dr Local", "role": "trainee"}
    assert notifications_of(requester, "participant.accepted") == []
    assert notifications_of(lead, "participant.declined") == []
    with speaking("en"):
        assert texts.title(accepted.kind, accepted.params) == "Dr Neuro accepted your invitation to a consult"
        assert texts.title(declined.kind, declined.params) == "Dr Local declined your invitation to a consult"
    with speaking("zh_CN"):
        assert texts.title(accepted.kind, accepted.params) == "Dr Neuro 已接受您的会诊邀请"


def test_a_removed_participant_is_told_and_the_link_leads_to_their_dashboard(app, world, make):
    c, lead, neuro = world["consult"], world["lead"], world["neuro"]
    make.participant(c, neuro, "specialist", by=lead)
    participants.remove(world["coordinator"], c.ref, neuro.id)
    [note] = notifications_of(neuro, "participant.removed")
    assert note.params == {"by": "Coordinator Wang", "role": "specialist"}
    with speaking("en"):
        assert texts.title(note.kind, note.params) == "Coordinator Wang removed you from a consult"
    with app.test_request_context("/"):
        assert texts.link(note.kind, c.ref) == "/"  # the consult is a 404 to them now
    client = app.test_client()
    login(client, neuro)
    listing = client.get("/notifications").get_data(as_text=True)
    assert '<a href="/" class="notification-link">Coordinator Wang removed you from a consult</a>' in listing


def test_a_rolled_back_invitation_leaves_no_notification(world, failing_commit):
    c, lead, neuro = world["consult"], world["lead"], world["neuro"]
    before = counts()
    with failing_commit(), pytest.raises(CommitFailed):
        participants.invite(lead, c.ref, neuro.id, "specialist")
    assert counts() == before


def test_the_invitation_arrives_live_after_the_commit(world, party_socket):
    c, lead, neuro = world["consult"], world["lead"], world["neuro"]
    bell = party_socket(neuro, "/notify")
    bell.get_received("/notify")
    participants.invite(lead, c.ref, neuro.id, "specialist")
    got = [p["args"][0] for p in bell.get_received("/notify") if p["name"] == "notification"]
    assert [(g["notification"]["kind"], g["notification"]["link"], g["unread"]) for g in got] == [
        ("participant.invited", f"/consults/{c.ref}", 1)]


def test_the_invitation_mail_speaks_the_invitees_language(app, world, smtp_server, monkeypatch):
    monkeypatch.setitem(app.config, "PUBLIC_URL", "https://huizhen.example.org")
    c, lead, neuro = world["consult"], world["lead"], world["neuro"]
    neuro.locale = "zh_CN"
    db.session.commit()
    participants.invite(lead, c.ref, neuro.id, "specialist")
    participants.respond(neuro, c.ref, accept=True)
    delivery.run_once()
    [invited] = smtp_server.wait_for("neuro@hospital.example", 1)
    assert invited["Subject"] == "会诊平台：Dr Lead 邀请您为一次会诊提供第二意见"
    plain = invited.get_body(preferencelist=("plain",)).get_content()
    assert f"https://huizhen.example.org/consults/{c.ref}" in plain
    mails = smtp_server.wait_for("lead@hospital.example", 2)  # the acceptance (after the earlier ones)
    assert any(m["Subject"] == "Huizhen: Dr Neuro accepted your invitation to a consult" for m in mails)
