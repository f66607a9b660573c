"""Which language a request speaks: the user's setting, the header's switch, Accept-Language, the
default; the setting survives signing out and in."""

from __future__ import annotations

import re

from flask import Flask

from tests.conftest import login
from webapp.extensions import db
from webapp.models import User


def lang_of(response) -> str:
    match = re.search(r'<html lang="([^"]+)"', response.get_data(as_text=True))
    assert match, "every page names its language"
    return match.group(1)


def switch(client, locale: str, next_path: str = "/login"):
    page = client.get(next_path)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    return client.post("/language", data={"csrf_token": token, "locale": locale, "next": next_path})


def test_the_default_locale_is_chinese(app: Flask):
    app.config["DEFAULT_LOCALE"] = "zh_CN"
    try:
        assert lang_of(app.test_client().get("/login")) == "zh-CN"
    finally:
        app.config["DEFAULT_LOCALE"] = "en"


def test_accept_language_decides_for_a_visitor(app: Flask):
    client = app.test_client()
    assert lang_of(client.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})) == "zh-CN"
    assert lang_of(client.get("/login", headers={"Accept-Language": "en-GB,en;q=0.9"})) == "en"
    assert lang_of(client.get("/login", headers={"Accept-Language": "fr-FR"})) == "en"  # the (test) default


def test_the_switch_before_sign_in_beats_the_browser(app: Flask):
    client = app.test_client()
    r = switch(client, "zh_CN")
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")
    assert lang_of(client.get("/login", headers={"Accept-Language": "en"})) == "zh-CN"
    r = switch(client, "en")
    assert lang_of(client.get("/login", headers={"Accept-Language": "zh-CN"})) == "en"


def test_the_users_setting_beats_the_browser_and_survives_sign_out(app: Flask, make):
    user = make.rural(email="ma@test.example")
    client = app.test_client()
    login(client, user.email)
    switch(client, "zh_CN", "/")
    assert db.session.get(User, user.id).locale == "zh_CN"
    assert lang_of(client.get("/", headers={"Accept-Language": "en"})) == "zh-CN"
    page = client.get("/")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    client.post("/logout", data={"csrf_token": token})
    other = app.test_client()  # another browser, asking for English
    login(other, user.email)
    assert lang_of(other.get("/", headers={"Accept-Language": "en"})) == "zh-CN"


def test_an_unknown_language_is_ignored(app: Flask):
    client = app.test_client()
    switch(client, "klingon")
    assert lang_of(client.get("/login", headers={"Accept-Language": "en"})) == "en"


def test_a_chinese_page_shows_the_catalogs_chinese(app: Flask):
    """The compiled catalog is the one Flask-Babel finds for zh_CN (Babel names it zh_Hans_CN)."""
    from babel import Locale
    from babel.support import Translations

    from webapp.i18n import TRANSLATIONS_DIR

    zh = Translations.load(str(TRANSLATIONS_DIR), [Locale.parse("zh_CN")], "messages")
    sign_in = zh.gettext("Sign in")
    assert sign_in != "Sign in", "the zh_CN catalog translates the sign-in button"
    page = app.test_client().get("/login", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert sign_in in page


def test_the_scripts_catalog_is_one_cached_script_per_language(app: Flask):
    """/i18n/<locale>.js carries the catalog and t(); cached for a year only under its version."""
    client = app.test_client()
    page = client.get("/login", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    src = re.search(r'<script src="(/i18n/zh_CN\.js\?v=[0-9a-f]+)"', page)
    assert src, "the page loads the Chinese catalog script"
    r = client.get(src.group(1))
    assert r.status_code == 200 and r.mimetype == "text/javascript"
    assert "immutable" in r.headers["Cache-Control"]
    body = r.get_data(as_text=True)
    assert body.startswith("window.HZ_CATALOG = {") and "window.t = t" in body
    assert any("\u4e00" <= ch <= "\u9fff" for ch in body), "the catalog holds the Chinese texts"
    assert "no-cache" in client.get("/i18n/zh_CN.js?v=stale").headers["Cache-Control"]
    assert client.get("/i18n/fr.js").status_code == 404
