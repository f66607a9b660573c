"""`flask seed-demo`: the Chinese demo world by default, the English one with --locale en."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from tests.conftest import login
from webapp.demo import DEMO_PASSWORD
from webapp.extensions import db
from webapp.models import Consult, ConsultStatus, Facility, Message, NoteUpdate, User
from webapp.notes import services as notes

EMAILS = {"coordinator@demo.test", "rural@demo.test", "specialist@demo.test", "specialist2@demo.test"}
HAN = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(autouse=True)
def _no_cached_notes(app):
    notes.forget()
    yield
    notes.forget()


def _seed(app, *args: str):
    result = app.test_cli_runner().invoke(args=["seed-demo", *args])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    return result


def _structure() -> tuple[list[Consult], list[Message]]:
    users = db.session.scalars(select(User)).all()
    assert {u.email for u in users} == EMAILS
    assert db.session.scalar(select(func.count()).select_from(Facility)) == 3
    consults = db.session.scalars(select(Consult).order_by(Consult.id)).all()
    assert [c.status for c in consults] == [ConsultStatus.SCHEDULED, ConsultStatus.REQUESTED]
    messages = db.session.scalars(select(Message).order_by(Message.seq)).all()
    assert len(messages) == 3 and {m.consult_id for m in messages} == {consults[0].id}
    assert db.session.scalar(select(func.count()).select_from(NoteUpdate)) == 2
    return consults, messages


def test_seed_demo_is_chinese_by_default(app, client):
    result = _seed(app)
    assert DEMO_PASSWORD in result.output
    consults, messages = _structure()
    users = db.session.scalars(select(User)).all()
    assert {u.locale for u in users} == {"zh_CN"}
    assert all(HAN.search(u.full_name) for u in users)
    assert "马晓丽" in {u.full_name for u in users}
    assert all(HAN.search(f.name) and HAN.search(f.region) for f in db.session.scalars(select(Facility)))
    for consult in consults:
        for text in (consult.chief_complaint, consult.history, consult.findings, consult.question):
            assert HAN.search(text), text
    assert all(HAN.search(m.body) for m in messages)
    texts = notes.text_of(consults[0])
    assert HAN.search(texts["history"]) and HAN.search(texts["assessment"])

    # the demo logins work, and the rural doctor's dashboard speaks Chinese with the Chinese case
    assert login(client, "rural@demo.test", DEMO_PASSWORD).status_code == 302
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<html lang="zh-CN"' in html
    assert consults[0].chief_complaint in html and "马晓丽" in html


def test_seed_demo_in_english(app):
    _seed(app, "--locale", "en")
    consults, messages = _structure()
    users = db.session.scalars(select(User)).all()
    assert {u.locale for u in users} == {"en"}
    assert "Dr. Li Wei" in {u.full_name for u in users}
    assert "Qingshan County People's Hospital" in {f.name for f in db.session.scalars(select(Facility))}
    assert consults[0].chief_complaint == "Intermittent chest tightness on exertion for three weeks"
    for text in [u.full_name for u in users] + [c.history for c in consults] + [m.body for m in messages]:
        assert not HAN.search(text), text
    assert "myocardial infarction" in notes.text_of(consults[0])["history"]


def test_seed_demo_refuses_a_database_with_users(app):
    _seed(app, "--locale", "en")
    again = app.test_cli_runner().invoke(args=["seed-demo"])
    assert again.exit_code != 0 and "already has users" in again.output
    skipped = app.test_cli_runner().invoke(args=["seed-demo", "--if-empty"])
    assert skipped.exit_code == 0 and "nothing to do" in skipped.output
