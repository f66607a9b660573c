"""Each role's home page."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user

from ..auth.decorators import me
from ..consults import participants, policy
from ..models import Role, utcnow
from ..rooms.services import opens_at
from ..scheduling import services as scheduling
from . import services as home

bp = Blueprint("dashboard", __name__)


@bp.get("/favicon.ico")
def favicon():
    """Browsers ask for /favicon.ico before reading the page's icon link."""
    return redirect(url_for("static", filename="favicon.svg"), code=301)


def _upcoming(user) -> dict:
    """The user's upcoming consultations, and which of their rooms a party can join now (one click)."""
    upcoming, now = scheduling.upcoming_for(user), utcnow()
    joinable = {a.id for a in upcoming
                if policy.is_participant(user, a.consult) and (opens_at(a.consult) or now) <= now}
    return {"upcoming": upcoming, "joinable": joinable, "invitations": participants.invitations_for(user)}


@bp.get("/")
def index():
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login"))
    user = me()
    if user.role == Role.RURAL_DOCTOR:
        rows = home.rural_rows(user)
        return render_template("dashboard/rural.html", rows=rows, todo=sum(1 for r in rows if r.action),
                               **_upcoming(user))
    if user.role == Role.SPECIALIST:
        return render_template("dashboard/specialist.html", home=home.specialist_home(user), **_upcoming(user),
                               has_availability=bool(scheduling.windows_of(user)))
    return render_template("dashboard/coordinator.html", home=home.coordinator_home(user), **_upcoming(user))
