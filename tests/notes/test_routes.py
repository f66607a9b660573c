"""The notes pages over HTTP: revision history, the notes panel in the room, the signed notes."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.conftest import login
from tests.notes.peers import Peer
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import AuditEvent
from webapp.notes import services


def audits(action: str) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action))


def _world(make):
    rural, specialist = make.rural(name="Dr Ma Xiaoli"), make.specialist(name="Dr Zhou Wei")
    consult = make.scheduled(rural, specialist)
    a = Peer("a")
    services.apply_update(rural, consult, a.append("history", "Exertional chest pain <b>x</b>"))
    services.apply_update(specialist, consult, a.append("plan", "Aspirin"))
    return rural, specialist, consult


def test_history_page_for_parties_and_coordinators(app, make):
    rural, specialist, consult = _world(make)
    ref = consult.ref
    coordinator = make.coordinator()
    for user in (rural, specialist, coordinator):
        client = app.test_client()
        login(client, user)
        page = client.get(f"/consults/{ref}/notes/history")
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert "Dr Ma Xiaoli" in html and "Dr Zhou Wei" in html
        assert "Exertional chest pain &lt;b&gt;x&lt;/b&gt;" in html  # text, never markup
        assert "<b>x</b>" not in html
    assert audits("notes.history_viewed") == 3


def test_history_page_refuses_others_with_an_audited_404(app, make):
    _, _, consult = _world(make)
    ref = consult.ref
    client = app.test_client()
    assert client.get(f"/consults/{ref}/notes/history").status_code in (302, 401)
    login(client, make.rural())
    assert client.get(f"/consults/{ref}/notes/history").status_code == 404
    assert audits("notes.access_denied") == 1
    assert client.get("/consults/nope/notes/history").status_code == 404


def test_history_page_shows_an_earlier_version(app, make):
    rural, _, consult = _world(make)
    ref = consult.ref
    first = services.history(consult, group_seconds=0)[0]
    client = app.test_client()
    login(client, rural)
    html = client.get(f"/consults/{ref}/notes/history?at={first.last_id}").get_data(as_text=True)
    assert "The notes after this revision" in html
    version = html[html.index('id="notes-version"'):]
    assert "Exertional chest pain" in version and "Aspirin" not in version
    assert client.get(f"/consults/{ref}/notes/history?at=999999").status_code == 404


def test_room_page_renders_the_notes_panel(app, make):
    rural, _, consult = _world(make)
    ref = consult.ref
    client = app.test_client()
    login(client, rural)
    page = client.get(f"/consults/{ref}/room")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'id="notes"' in html and 'data-can-edit="true"' in html
    for section in services.SECTIONS:
        assert f'data-section="{section}"' in html
    assert "Exertional chest pain &lt;b&gt;x&lt;/b&gt;</textarea>" in html
    assert "/static/vendor/yjs/yjs.min.js" in html and "/static/js/notes.js" in html
    assert "style=" not in html[html.index('id="notes"'):html.index("</textarea>")]  # CSP: no inline styles
    assert client.get("/static/vendor/yjs/yjs.min.js").status_code == 200


def test_signed_notes_on_the_consult_page(app, make):
    rural, specialist, consult = _world(make)
    ref = consult.ref
    client = app.test_client()
    login(client, rural)
    assert "Case notes (signed)" not in client.get(f"/consults/{ref}").get_data(as_text=True)
    consults.save_recommendation(specialist, ref, consults.RecommendationData(
        assessment="Stable angina", plan="Aspirin"), sign=True)
    html = client.get(f"/consults/{ref}").get_data(as_text=True)
    card = html[html.index('id="signed-notes"'):]
    assert "Case notes (signed)" in card and "Exertional chest pain" in card and "Aspirin" in card
    room = client.get(f"/consults/{ref}/room").get_data(as_text=True)
    assert 'data-read-only="true"' in room and 'data-can-edit="false"' in room
