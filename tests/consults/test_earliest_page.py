"""The request and accept pages of an urgent consult show the earliest free times across its specialty:
in the viewer's zone, with the specialist and hospital, partner hospitals first or the earliest overall."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tests.conftest import login
from webapp.consults.matching import first_available_for
from webapp.models import Urgency, utcnow
from webapp.scheduling import services as scheduling
from webapp.timefmt import format_local, local


@pytest.fixture
def world(make):
    home, partner_hospital, elsewhere = make.facility("Longxi County"), make.facility("Lanzhou First"), \
        make.facility("Beijing Heart Centre")
    make.partnership(home, partner_hospital)
    requester = make.rural(facility=home, timezone="Europe/London")
    partner = make.specialist(facility=partner_hospital, name="Partner Later", timezone="Asia/Shanghai")
    other = make.specialist(facility=elsewhere, name="Other Sooner", timezone="Asia/Shanghai")
    make.availability(partner)
    make.availability(other)
    today = local(utcnow(), "Asia/Shanghai").date()
    scheduling.add_leave(partner, today - timedelta(days=1), today + timedelta(days=2))  # the partner is later
    return requester, partner, other


def _card(page: str) -> str:
    match = re.search(r'<div class="card" id="earliest">(.*?)</div>', page, re.S)
    assert match, "no earliest-available card"
    return match.group(1)


def _entries(card: str) -> list[tuple[str, str]]:
    return [(when, re.sub(r"<[^>]+>", "", where).strip()) for when, where in re.findall(
        r"<strong>([^<]+)</strong><span></span>\s*<span class=\"where\">(.*?)</span></li>", card, re.S)]


def test_the_request_page_shows_partner_hospitals_first_then_the_earliest_overall_on_request(app, make, world):
    requester, partner, other = world
    draft = make.draft(requester, urgency=Urgency.URGENT)
    client = app.test_client()
    login(client, requester)

    page = client.get(f"/consults/{draft.ref}/edit")
    assert page.status_code == 200
    card = _card(page.get_data(as_text=True))
    expected = first_available_for(draft)
    assert [f.specialist for f in expected] == [partner] * 3
    with app.test_request_context():
        times = [format_local(f.slot.starts_at, "Europe/London") for f in expected]
    entries = _entries(card)
    assert [when for when, _ in entries] == times  # in the viewer's zone (London), not Shanghai's
    assert all(where.startswith("Partner Later · Lanzhou First") and "Partner hospital" in where
               for _, where in entries)
    assert 'href="?earliest=overall#earliest"' in card

    overall = client.get(f"/consults/{draft.ref}/edit?earliest=overall")
    card = _card(overall.get_data(as_text=True))
    expected = first_available_for(draft, prefer_partner=False)
    assert expected[0].specialist == other and expected[0].slot.starts_at < first_available_for(draft)[0].slot.starts_at
    entries = _entries(card)
    with app.test_request_context():
        assert entries[0][0] == format_local(expected[0].slot.starts_at, "Europe/London")
    assert entries[0][1] == "Other Sooner · Beijing Heart Centre"
    assert 'href="?earliest=partner#earliest"' in card

    consult = make.requested(requester, urgency=Urgency.EMERGENCY)  # once sent, on the consult's page
    assert "Partner Later" in _card(client.get(f"/consults/{consult.ref}").get_data(as_text=True))


def test_a_routine_request_does_not_show_it(app, make, world):
    requester, _, _ = world
    draft = make.draft(requester, urgency=Urgency.ROUTINE)
    client = app.test_client()
    login(client, requester)
    page = client.get(f"/consults/{draft.ref}/edit").get_data(as_text=True)
    assert 'id="earliest"' not in page


def test_the_accept_page_shows_it_to_the_specialist_in_their_zone(app, make, world):
    requester, partner, other = world
    consult = make.requested(requester, urgency=Urgency.URGENT)
    client = app.test_client()
    login(client, other)
    default = _entries(_card(client.get(f"/consults/{consult.ref}/accept").get_data(as_text=True)))
    assert default[0][1].startswith(partner.full_name)  # partner hospitals first, for the requester's hospital
    page = client.get(f"/consults/{consult.ref}/accept?earliest=overall")
    assert page.status_code == 200
    entries = _entries(_card(page.get_data(as_text=True)))
    with app.test_request_context():
        assert entries[0][0] == format_local(first_available_for(consult, prefer_partner=False)[0].slot.starts_at,
                                             "Asia/Shanghai")
    assert entries[0][1].startswith("Other Sooner")
    # the page still accepts with a slot, the query string kept by the form
    slot = scheduling.open_slots(other)[1].starts_at.isoformat()
    form = page.get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form).group(1)
    r = client.post(f"/consults/{consult.ref}/accept?earliest=overall", data={"csrf_token": token, "slot": slot})
    assert r.status_code == 302


def test_no_free_time_says_so(app, make):
    requester = make.rural()
    make.specialist()  # no availability
    draft = make.draft(requester, urgency=Urgency.URGENT)
    client = app.test_client()
    login(client, requester)
    card = _card(client.get(f"/consults/{draft.ref}/edit").get_data(as_text=True))
    assert "No specialist of this specialty has a free time within the booking horizon." in card
