"""Languages: the locale a request speaks (Flask-Babel), translation outside templates, the
browser scripts' catalog and the header's language switch.

The locale is chosen, in order: the signed-in user's own setting (``User.locale``), the choice
made with the header's switch before signing in (kept in the session), the browser's
Accept-Language, then ``DEFAULT_LOCALE`` (zh_CN). Messages are English msgids; the catalogs under
``webapp/translations`` (domain ``messages`` for the server, ``js`` for the scripts) give Chinese.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from babel import Locale
from babel.support import Translations
from flask import Flask, current_app, has_app_context, has_request_context, request, session
from flask_babel import Babel, force_locale, get_locale
from flask_babel import gettext as _gettext
from flask_login import current_user

LOCALES = ("zh_CN", "en")
LANGUAGE_NAMES = {"zh_CN": "中文", "en": "English"}
TRANSLATIONS_DIR = Path(__file__).resolve().parent.parent / "translations"
CATALOG_KEY = "huizhen.js_catalogs"

babel = Babel()


def N_(message: str) -> str:
    """Mark a message for the catalog where it is defined; it is translated where it is shown."""
    return message


def clean_locale(value: Any) -> str | None:
    """One of LOCALES for a code such as 'zh-CN', 'zh_cn', 'zh' or 'en-GB'; None if unsupported."""
    if not isinstance(value, str) or not value:
        return None
    code = value.replace("-", "_").lower()
    if code.startswith("zh"):
        return "zh_CN"
    if code.startswith("en"):
        return "en"
    return None


def select_locale() -> str:
    """The locale of the current request (see the module's docstring for the order)."""
    if has_request_context():
        try:
            user = current_user._get_current_object()  # type: ignore[attr-defined]
        except Exception:  # no login manager in this context
            user = None
        if user is not None and getattr(user, "is_authenticated", False):
            chosen = clean_locale(getattr(user, "locale", None))
            if chosen:
                return chosen
        chosen = clean_locale(session.get("locale"))
        if chosen:
            return chosen
        best = request.accept_languages.best_match(["zh-CN", "zh", "en"])
        chosen = clean_locale(best)
        if chosen:
            return chosen
    return current_app.config.get("DEFAULT_LOCALE", "zh_CN")


def current_locale() -> str:
    """The locale code ('zh_CN' or 'en') that the current context speaks."""
    if not has_app_context():
        return "en"
    return clean_locale(str(get_locale() or "")) or current_app.config.get("DEFAULT_LOCALE", "zh_CN")


def translate(message: str, params: dict[str, Any] | None = None) -> str:
    """A msgid translated into the current locale, its %(name)s parameters filled in."""
    params = params or {}
    if has_app_context() and "babel" in current_app.extensions:
        return _gettext(message, **params)
    return message % params if params else message


@contextmanager
def speaking(locale: str | None) -> Iterator[None]:
    """Translate into this locale inside the block (mail and notifications for a recipient)."""
    chosen = clean_locale(locale) or current_app.config.get("DEFAULT_LOCALE", "zh_CN")
    with force_locale(chosen):
        yield


def user_locale(user: Any) -> str:
    """The locale to write to a user in when they are not the one asking (mail, webhook)."""
    return clean_locale(getattr(user, "locale", None)) or current_app.config.get("DEFAULT_LOCALE", "zh_CN")


def js_catalog(locale: str | None = None) -> dict[str, str]:
    """The scripts' messages (domain ``js``) translated into the locale: msgid -> text."""
    locale = locale or current_locale()
    cache: dict[str, dict[str, str]] = current_app.extensions.setdefault(CATALOG_KEY, {})
    if locale not in cache:
        catalog: dict[str, str] = {}
        if locale != "en":
            loaded = Translations.load(str(TRANSLATIONS_DIR), [Locale.parse(locale)], domain="js")
            for key, text in getattr(loaded, "_catalog", {}).items():
                if isinstance(key, str) and key and text:
                    catalog[key] = text
        cache[locale] = catalog
    return cache[locale]


I18N_JS = Path(__file__).resolve().parents[2] / "static" / "js" / "i18n.js"


def js_catalog_script(locale: str) -> tuple[str, str]:
    """The script every page loads first: the locale's catalog, then static/js/i18n.js (t() and
    the time formats) — one request for both — and its version (a hash of its content)."""
    cache: dict[str, tuple[str, str]] = current_app.extensions.setdefault(CATALOG_KEY + ".script", {})
    if locale not in cache:
        text = json.dumps(js_catalog(locale), ensure_ascii=False, sort_keys=True)
        body = f"window.HZ_CATALOG = {text};\n" + I18N_JS.read_text(encoding="utf-8")
        cache[locale] = (body, hashlib.sha256(body.encode()).hexdigest()[:16])
    return cache[locale]


def init_i18n(app: Flask) -> None:
    """Flask-Babel with Huizhen's locale selector, the language switch and the template globals."""
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(TRANSLATIONS_DIR))
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "en")  # the msgids are English
    babel.init_app(app, locale_selector=select_locale)
    from .routes import bp

    app.register_blueprint(bp)

    @app.context_processor
    def _i18n_globals() -> dict[str, Any]:
        locale = current_locale()
        return {"current_locale": locale, "html_lang": "zh-CN" if locale == "zh_CN" else "en",
                "language_names": LANGUAGE_NAMES,
                "js_catalog_version": lambda: js_catalog_script(locale)[1]}
