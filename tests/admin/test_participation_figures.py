"""The coordinator's figures beyond the pair: how many trainees learned from how many consults, the
second specialists and their signed opinions; shown on the dashboard and the queue, and in Chinese.
The consult page gives the coordinator each participant's history (issue 13)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import login
from tests.test_http_consults import text as page_text
from webapp.admin import services as admin
from webapp.consults import opinions, participants
from webapp.extensions import db
from webapp.models import Facility

ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}


def figure(page: str, name: str) -> int:
    found = re.search(rf'data-figure="{name}">(\d+)<', page)
    assert found, name
    return int(found.group(1))


@pytest.fixture
def programme(make):
    """Three consults: one with two trainees (one of whom also learns in the second consult), a second
    specialist and two opinions; a trainee who declined and one only invited count for nothing."""
    requester, lead = make.rural(name="Dr Requester"), make.specialist(name="Dr Lead")
    first, second, third = (make.accepted(requester, lead) for _ in range(3))
    clinic = db.session.get(Facility, requester.facility_id)
    t1 = make.rural(facility=clinic, name="Dr Trainee One")
    t2 = make.rural(facility=clinic, name="Dr Trainee Two")
    for consult, trainee in ((first, t1), (first, t2), (second, t1)):
        make.participant(consult, trainee, "trainee")
    declined = make.rural(facility=clinic, name="Dr Declined")
    participants.invite(requester, third.ref, declined.id, "trainee")
    participants.respond(declined, third.ref, accept=False)
    pending = make.rural(facility=clinic, name="Dr Pending")
    participants.invite(requester, third.ref, pending.id, "trainee")
    neuro = make.second_specialist(first, name="Dr Neuro")
    opinions.add_opinion(neuro, first.ref, "Agree.")
    opinions.add_opinion(neuro, first.ref, "Addendum after the MRI.")
    return {"first": first, "neuro": neuro, "t1": t1, "coordinator": make.coordinator(), "requester": requester}


def test_participation_of_an_empty_programme(app):
    assert admin.participation() == admin.Participation(0, 0, 0, 0, 0)


def test_participation_counts_distinct_trainees_and_consults_and_opinions(programme):
    p = admin.figures().participation
    assert (p.trainees, p.trainee_consults) == (2, 2)
    assert (p.second_specialists, p.opinions, p.opinion_consults) == (1, 2, 1)
    # a trainee removed later still learned from that consult
    participants.remove(programme["requester"], programme["first"].ref, programme["t1"].id)
    assert admin.participation().trainees == 2


@pytest.mark.usefixtures("isolated_requests")
def test_the_coordinator_sees_the_figures_and_each_participants_history(app, programme):
    client = app.test_client()
    assert login(client, programme["coordinator"]).status_code == 302
    for path in ("/", "/admin/queue"):
        page = client.get(path).get_data(as_text=True)
        assert (figure(page, "trainees"), figure(page, "second_specialists"), figure(page, "opinions")) == (2, 1, 2)
        assert "trainees learned from 2 consults" in page_text(client.get(path))
        assert "signed second opinions on 1 consult" in page_text(client.get(path))
        zh = page_text(client.get(path, headers=ZH))
        assert "名学员从 2 次会诊中学习" in zh and "条已签署的第二意见，涉及 1 次会诊" in zh
    body = page_text(client.get(f"/consults/{programme['first'].ref}"))
    history = body[body.index('id="participants"'):]
    for name in ("Dr Requester", "Dr Lead", "Dr Trainee One", "Dr Trainee Two", "Dr Neuro"):
        assert name in history, name
    assert history.count("added ") >= 3 and history.count("accepted ") >= 3
    assert "Invited specialist" in history and "Trainee" in history
    zh = page_text(client.get(f"/consults/{programme['first'].ref}", headers=ZH))
    zh_history = zh[zh.index('id="participants"'):]
    assert "接受" in zh_history and "学员" in zh_history and "accepted " not in zh_history
