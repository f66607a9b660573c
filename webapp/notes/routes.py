"""The notes revision history page, and template helpers for the notes panel and the signed notes."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request

from ..auth.decorators import me, role_required
from ..models import Consult, Role
from . import services

bp = Blueprint("notes", __name__, url_prefix="/consults")


@bp.get("/<ref>/notes/history")
@role_required(Role.RURAL_DOCTOR, Role.SPECIALIST, Role.COORDINATOR)
def history(ref: str):
    consult = services.open_notes(me(), ref, audit="notes.history_viewed")
    revisions = services.history(consult)
    at = request.args.get("at", type=int)
    version = None
    if at is not None:
        if not any(r.first_id <= at <= r.last_id for r in revisions):
            abort(404)
        version = services.text_at(consult, at)
    return render_template("notes/history.html", consult=consult, revisions=list(reversed(revisions)),
                           at=at, version=version, current=services.text_of(consult),
                           labels=services.section_labels(), signed_at=services.signed_at(consult))


@bp.app_template_global()
def notes_sections() -> list[tuple[str, str]]:
    """(name, label) of each notes section, in order."""
    return list(services.section_labels().items())


@bp.app_template_global()
def notes_text(consult: Consult) -> dict[str, str]:
    """The consult's current notes (the page is rendered before the live sync takes over)."""
    return services.text_of(consult)


@bp.app_template_global()
def notes_signed(consult: Consult) -> dict[str, str] | None:
    """The signed notes of a consult, if any."""
    return services.signed_notes(consult)
