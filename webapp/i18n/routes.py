"""The header's language switch: POST /language, kept on the user (or, signed out, in the session)."""

from __future__ import annotations

from flask import Blueprint, Response, abort, redirect, request, session, url_for
from flask_login import current_user

from ..extensions import db
from ..validation import safe_local_path
from . import LOCALES, clean_locale, js_catalog_script

bp = Blueprint("i18n", __name__)


@bp.post("/language")
def switch():
    """Speak the chosen language from now on, then go back to the page the switch was on."""
    chosen = clean_locale(request.form.get("locale"))
    if chosen is not None:
        session["locale"] = chosen
        if current_user.is_authenticated:
            current_user.locale = chosen
            db.session.commit()
    return redirect(safe_local_path(request.form.get("next")) or url_for("dashboard.index"))


@bp.get("/i18n/<locale>.js")
def catalog(locale: str) -> Response:
    """The browser scripts' words in one language; cached for a year under its content's version."""
    if locale not in LOCALES:
        abort(404)
    body, version = js_catalog_script(locale)
    response = Response(body, mimetype="text/javascript")
    if request.args.get("v") == version:
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    else:
        response.headers["Cache-Control"] = "no-cache"
    return response
