"""Refusals speak Chinese to a zh-CN client: a CSRF failure, the login throttle (429), a 404 page, a
domain error as JSON and a Socket.IO error acknowledgement.

Each refusal is met twice, by an English and by a Chinese client: the Chinese one must carry
Chinese text and must not carry the English sentence the English client got (so the test does not
depend on a particular translation, only on there being one).
"""

from __future__ import annotations

import html
import re

import pytest
from flask import Flask

from tests.conftest import PASSWORD, csrf_token, login
from tests.i18n.checker import CJK, page_english
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import User

pytestmark = pytest.mark.zh

ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}
EN = {"Accept-Language": "en"}
JSON = {"Accept": "application/json"}
UNKNOWN_REF = "AAAAAAAAAAAAAAAA"


def lede(response) -> str:
    """The message of an error page."""
    found = re.search(r'<p class="lede">(.*?)</p>', response.get_data(as_text=True), re.S)
    assert found, response.get_data(as_text=True)[:500]
    return html.unescape(found.group(1)).strip()


def assert_chinese(english: str, chinese: str, page: str | None = None) -> None:
    """The zh-CN message has Chinese in it and is not the English one (and the page has no English run)."""
    assert english and not CJK.search(english), f"the English client got {english!r}"
    assert CJK.search(chinese), f"no Chinese in the message to a zh-CN client: {chinese!r}"
    assert english not in chinese, f"the English sentence is still there: {chinese!r}"
    if page is not None:
        runs = page_english(page)
        assert not runs, f"English left on the error page for a zh-CN client: {runs}"


def with_locale(user: User, locale: str) -> User:
    user.locale = locale
    db.session.commit()
    return user


def test_a_csrf_failure_is_in_chinese(app: Flask):
    pages = {}
    for name, headers in (("en", EN), ("zh", ZH)):
        client = app.test_client()
        client.get("/login", headers=headers)  # a session, but the form's token is not sent
        r = client.post("/login", data={"email": "a@test.example", "password": "x"}, headers=headers)
        assert r.status_code == 400
        pages[name] = r
    assert_chinese(lede(pages["en"]), lede(pages["zh"]), pages["zh"].get_data(as_text=True))

    client = app.test_client()
    r = client.post("/login", data={"email": "a@test.example", "password": "x"}, headers={**ZH, **JSON})
    assert r.status_code == 400 and r.get_json()["error"] == "csrf_failed"
    assert_chinese(lede(pages["en"]), r.get_json()["message"])


def test_the_login_throttle_is_in_chinese(app: Flask, make, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(app.config, "LOGIN_RATE_LIMIT", "2 per minute")
    make.rural(email="known@test.example")
    answers = {}
    for name, headers, address in (("en", EN, "10.0.0.1"), ("zh", ZH, "10.0.0.2")):
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        for _ in range(2):
            token = csrf_token(client)
            client.post("/login", data={"email": f"{name}@test.example", "password": "wrong-password-123",
                                        "csrf_token": token}, headers=headers)
        token = csrf_token(client)
        r = client.post("/login", data={"email": f"{name}@test.example", "password": PASSWORD, "csrf_token": token},
                        headers=headers)
        assert r.status_code == 429, r.status_code
        answers[name] = r
        if name == "zh":
            r = client.post("/login", data={"email": "zh@test.example", "password": "x", "csrf_token": token},
                            headers={**ZH, **JSON})
            assert r.status_code == 429 and r.get_json()["error"] == "too_many_requests"
            answers["zh-json"] = r
    english = lede(answers["en"])
    assert_chinese(english, lede(answers["zh"]), answers["zh"].get_data(as_text=True))
    assert_chinese(english, answers["zh-json"].get_json()["message"])


def test_the_404_page_is_in_chinese(app: Flask, make):
    english = app.test_client().get("/no-such-page", headers=EN)
    chinese = app.test_client().get("/no-such-page", headers=ZH)
    assert english.status_code == chinese.status_code == 404
    assert_chinese(lede(english), lede(chinese), chinese.get_data(as_text=True))

    # and for a signed-in zh_CN user, whatever the browser asks for
    user = with_locale(make.rural(email="ma@test.example"), "zh_CN")
    client = app.test_client()
    login(client, user)
    signed_in = client.get(f"/consults/{UNKNOWN_REF}", headers=EN)
    assert signed_in.status_code == 404
    assert_chinese(lede(english), lede(signed_in), signed_in.get_data(as_text=True))


def test_a_domain_error_as_json_is_in_chinese(app: Flask, make):
    """A refused use case (the service's NotFound, its msgid translated when read) as a script sees it."""
    requester = make.rural(email="ma@test.example")
    consult = make.requested(requester)
    answers = {}
    for locale in ("en", "zh_CN"):
        outsider = with_locale(make.rural(email=f"outsider.{locale}@test.example"), locale)
        client = app.test_client()
        login(client, outsider)
        r = client.get(f"/consults/{consult.ref}", headers=JSON)
        assert r.status_code == 404 and r.is_json, r.get_data(as_text=True)[:300]
        assert r.get_json()["error"] == "not_found"
        answers[locale] = r.get_json()["message"]
    assert_chinese(answers["en"], answers["zh_CN"])

    # a refused transition (Conflict) from a service, for the consult's own requester
    messages = {}
    for locale in ("en", "zh_CN"):
        own = with_locale(make.rural(email=f"requester.{locale}@test.example"), locale)
        ref = make.requested(own).ref
        client = app.test_client()
        login(client, own)
        r = client.post(f"/consults/{ref}/acknowledge", data={"csrf_token": csrf_token(client, "/")},
                        headers=JSON)
        assert r.status_code == 409 and r.is_json, (r.status_code, r.get_data(as_text=True)[:300])
        assert r.get_json()["error"] == "conflict"
        messages[locale] = r.get_json()["message"]
        assert consults.view_consult(own, ref).recommendation is None
    assert_chinese(messages["en"], messages["zh_CN"])


def test_a_socket_error_ack_is_in_chinese(app: Flask, make, party_socket):
    """A join refused on the room's socket: the acknowledgement's message in the user's language."""
    acks, clients = {}, {}
    for locale in ("en", "zh_CN"):
        user = with_locale(make.rural(email=f"socket.{locale}@test.example"), locale)
        client = clients[locale] = party_socket(user, "/room")
        ack = client.emit("join", {"ref": UNKNOWN_REF}, namespace="/room", callback=True)
        assert isinstance(ack, dict) and ack["ok"] is False, ack
        acks[locale] = ack
    assert acks["en"]["error"] == acks["zh_CN"]["error"]
    assert_chinese(acks["en"]["message"], acks["zh_CN"]["message"])

    for locale in ("en", "zh_CN"):  # an invalid value: the validation message
        ack = clients[locale].emit("join", {"ref": "R\x00"}, namespace="/room", callback=True)
        assert ack["ok"] is False and ack["status"] == 422, ack
        acks[locale] = ack
    assert_chinese(acks["en"]["message"], acks["zh_CN"]["message"])
