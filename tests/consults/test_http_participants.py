"""Inviting, answering and removing participants over HTTP; the consult page lists them with history."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.conftest import login, post_form
from webapp.extensions import db
from webapp.models import ConsultParticipant, ParticipantRole

pytestmark = pytest.mark.usefixtures("isolated_requests")


@pytest.fixture
def world(make):
    clinic, city, partner_city = make.facility("Clinic"), make.facility("City Hospital"), make.facility("Partner")
    make.partnership(clinic, partner_city)
    requester = make.rural(facility=clinic, name="Dr Requester")
    lead = make.specialist(facility=city, name="Dr Lead")
    consult = make.accepted(requester, lead)
    return {
        "consult": consult, "requester": requester, "lead": lead,
        "neuro": make.specialist(specialty="neurology", facility=city, name="Dr Neuro City"),
        "neuro_partner": make.specialist(specialty="neurology", facility=partner_city, name="Dr Neuro Partner"),
        "local": make.rural(facility=clinic, name="Dr Local Trainee"),
        "far": make.rural(name="Dr Far Away"),
        "coordinator": make.coordinator(),
    }


def client_of(app, user):
    client = app.test_client()
    assert login(client, user).status_code == 302
    return client


def rows(consult_id: int, user_id: int) -> list[ConsultParticipant]:
    db.session.rollback()
    return list(db.session.scalars(select(ConsultParticipant).where(
        ConsultParticipant.consult_id == consult_id, ConsultParticipant.user_id == user_id)))


def test_search_lists_the_partner_hospitals_specialists_first_and_local_trainees(app, world):
    c, requester = world["consult"], world["requester"]
    client = client_of(app, requester)
    page = client.get(f"/consults/{c.ref}/invite?specialty=neurology").get_data(as_text=True)
    assert page.index("Dr Neuro Partner") < page.index("Dr Neuro City")
    assert "Dr Local Trainee" not in page  # a specialty search lists specialists only
    page = client.get(f"/consults/{c.ref}/invite").get_data(as_text=True)
    assert f'data-user="{world["local"].id}" data-role="trainee"' in page
    assert "Dr Far Away" not in page and "Dr Lead" not in page  # not of the facility; already taking part
    facility = world["neuro"].facility_id
    page = client.get(f"/consults/{c.ref}/invite?facility={facility}&specialty=neurology").get_data(as_text=True)
    assert "Dr Neuro City" in page and "Dr Neuro Partner" not in page, page[page.find("<main"):][:3000]
    assert client.get(f"/consults/{c.ref}/invite?facility=abc").status_code == 422
    assert client.get(f"/consults/{c.ref}/invite?specialty=astrology").status_code == 422
    # a participant who may not invite, and a stranger
    assert client_of(app, world["neuro"]).get(f"/consults/{c.ref}/invite").status_code == 404
    assert client_of(app, world["coordinator"]).get(f"/consults/{c.ref}/invite").status_code == 403


def test_invite_accept_and_remove_over_http(app, world):
    c, requester, lead, neuro, local = (world[k] for k in ("consult", "requester", "lead", "neuro", "local"))
    lead_client = client_of(app, lead)
    r = post_form(lead_client, f"/consults/{c.ref}/participants", {"user_id": str(neuro.id), "role": "specialist"},
                  token_from=f"/consults/{c.ref}")
    assert r.status_code == 302
    req_client = client_of(app, requester)
    r = post_form(req_client, f"/consults/{c.ref}/participants", {"user_id": str(local.id), "role": "trainee"},
                  token_from=f"/consults/{c.ref}")
    assert r.status_code == 302
    # invalid input: clear errors, never a 500
    for data, status in (({"user_id": "x", "role": "trainee"}, 422), ({"user_id": str(world["far"].id),
                          "role": "trainee"}, 422), ({"user_id": str(neuro.id), "role": "specialist"}, 409),
                         ({"user_id": str(local.id), "role": "chief"}, 422)):
        r = post_form(req_client, f"/consults/{c.ref}/participants", data, token_from=f"/consults/{c.ref}")
        assert r.status_code == status, (data, r.status_code)

    neuro_client = client_of(app, neuro)
    dash = neuro_client.get("/").get_data(as_text=True)
    assert 'id="invitations"' in dash and c.chief_complaint in dash
    assert "Accept the invitation" in neuro_client.get(f"/consults/{c.ref}").get_data(as_text=True)
    assert neuro_client.get(f"/consults/{c.ref}/room").status_code == 404  # not before accepting
    r = post_form(neuro_client, f"/consults/{c.ref}/invitation", {"answer": "accept"}, token_from="/")
    assert r.status_code == 302
    assert neuro_client.get(f"/consults/{c.ref}/room").status_code == 200
    local_client = client_of(app, local)
    r = post_form(local_client, f"/consults/{c.ref}/invitation", {"answer": "maybe"}, token_from="/")
    assert r.status_code == 422
    r = post_form(local_client, f"/consults/{c.ref}/invitation", {"answer": "decline"}, token_from="/")
    assert r.status_code == 302
    assert local_client.get(f"/consults/{c.ref}").status_code == 404

    page = req_client.get(f"/consults/{c.ref}").get_data(as_text=True)
    assert 'data-role="lead_specialist"' in page and f'data-user="{neuro.id}" data-role="specialist"' in page
    assert "declined" in page  # the trainee's answer is in the history
    # the lead invited the neurologist: the requester may not remove them, the lead and a coordinator may
    r = post_form(req_client, f"/consults/{c.ref}/participants/{neuro.id}/remove", token_from=f"/consults/{c.ref}")
    assert r.status_code == 403
    r = post_form(req_client, f"/consults/{c.ref}/participants/{lead.id}/remove", token_from=f"/consults/{c.ref}")
    assert r.status_code == 403
    coord_client = client_of(app, world["coordinator"])
    r = post_form(coord_client, f"/consults/{c.ref}/participants/{neuro.id}/remove",
                  token_from=f"/consults/{c.ref}")
    assert r.status_code == 302
    [row] = rows(c.id, neuro.id)
    assert row.role == ParticipantRole.SPECIALIST and row.removed_by_id == world["coordinator"].id
    assert neuro_client.get(f"/consults/{c.ref}").status_code == 404
    assert neuro_client.get(f"/consults/{c.ref}/room").status_code == 404
    r = post_form(coord_client, f"/consults/{c.ref}/participants/999999/remove", token_from=f"/consults/{c.ref}")
    assert r.status_code == 404
