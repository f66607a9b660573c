"""The server finds the zh_CN catalogs: Babel reads 'zh_CN' as zh_Hans_CN, and gettext would look
for that locale's catalogs under zh_Hans_CN and zh only, so every page stayed English whatever the
catalog said (webapp/i18n CatalogDomain looks under zh_CN too)."""

from __future__ import annotations

from pathlib import Path

from babel import Locale
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from flask import Flask, render_template_string
from flask_babel import force_locale, get_domain

from webapp.i18n import CatalogDomain, catalog_names


def catalog_dir(tmp_path: Path) -> Path:
    catalog = Catalog(locale="zh_CN")
    catalog.add("Sign in", "登录")
    path = tmp_path / "zh_CN" / "LC_MESSAGES"
    path.mkdir(parents=True)
    with open(path / "messages.mo", "wb") as f:
        write_mo(f, catalog)
    return tmp_path


def test_zh_cn_is_looked_up_under_its_own_directory():
    assert Locale.parse("zh_CN").script == "Hans"  # why: Babel adds the script
    assert "zh_CN" in catalog_names(Locale.parse("zh_CN"))
    assert catalog_names(Locale.parse("en")) == ["en"]


def test_a_zh_cn_catalog_translates_on_the_server(app: Flask, tmp_path: Path):
    domain = CatalogDomain(translation_directories=[str(catalog_dir(tmp_path))])
    with app.test_request_context():
        with force_locale("zh_CN"):
            assert domain.gettext("Sign in") == "登录"
        with force_locale("en"):
            assert domain.gettext("Sign in") == "Sign in"


def test_the_app_and_its_templates_use_that_domain(app: Flask):
    with app.test_request_context():
        assert isinstance(get_domain(), CatalogDomain)
        with force_locale("zh_CN"):
            assert render_template_string("{{ _('Sign in') }}") == get_domain().gettext("Sign in")
