"""Each role's home page."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user

from ..auth.decorators import me
from ..models import Role
from ..scheduling import services as scheduling
from . import services as home

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
        rows = home.rural_rows(user)
        return render_template("dashboard/rural.html", rows=rows, todo=sum(1 for r in rows if r.action),
                               upcoming=scheduling.upcoming_for(user))
    if user.role == Role.SPECIALIST:
        return render_template("dashboard/specialist.html", home=home.specialist_home(user),
                               upcoming=scheduling.upcoming_for(user),
                               has_availability=bool(scheduling.windows_of(user)))
    return render_template("dashboard/coordinator.html", home=home.coordinator_home(user),
                           upcoming=scheduling.upcoming_for(user))
