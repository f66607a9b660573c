"""Consult pages: a second specialist signs an opinion (an addendum under the recommendation)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, request, url_for
from flask_babel import gettext as _

from ..auth.decorators import me
from ..errors import ValidationFailed, wants_json
from . import opinions
from .forms import EmptyForm
from .routes import ANY_SIGNED_IN, consult_role

bp = Blueprint("opinions", __name__, url_prefix="/consults")


@bp.post("/<ref>/opinions")
@consult_role(*ANY_SIGNED_IN)
def add(ref: str):
    if not EmptyForm().validate():
        raise ValidationFailed("The form expired; reload the page and try again.")
    try:
        opinions.add_opinion(me(), ref, request.form.get("text", ""))
    except ValidationFailed as exc:
        if wants_json(request):
            raise
        flash(exc.message, "error")  # back to the page, where the form says what to write
        return redirect(url_for("consults.view", ref=ref, _anchor="opinions"))
    flash(_("Your opinion is signed and shown under the recommendation."), "success")
    return redirect(url_for("consults.view", ref=ref, _anchor="opinions"))


@bp.app_template_global()
def opinion_verified(opinion) -> bool:
    """Whether a signed opinion still matches its signature (the consult page shows it)."""
    return opinions.verify(opinion)
