"""Each role's home page."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user

from ..auth import services as accounts
from ..auth.decorators import me
from ..consults import services as consults
from ..models import Role
from ..scheduling import services as scheduling

bp = Blueprint("dashboard", __name__)


@bp.get("/favicon.ico")
def favicon():
    """Browsers ask for /favicon.ico before reading the page's icon link."""
    return redirect(url_for("static", filename="favicon.svg"), code=301)


@bp.get("/")
def index():
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login"))
    user = me()
    if user.role == Role.RURAL_DOCTOR:
        return render_template("dashboard/rural.html", consults=consults.requests_of(user),
                               upcoming=scheduling.upcoming_for(user))
    if user.role == Role.SPECIALIST:
        return render_template("dashboard/specialist.html", offers=consults.offers_for(user),
                               active=consults.active_for_specialist(user),
                               upcoming=scheduling.upcoming_for(user),
                               answered=consults.answered_by(user),
                               has_availability=bool(scheduling.windows_of(user)))
    return render_template("dashboard/coordinator.html", pending=accounts.pending_registrations(),
                           queue=consults.unassigned_queue(), upcoming=scheduling.upcoming_for(user))
