"""Specialists publish their weekly availability."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for

from ..auth.decorators import me, role_required
from ..errors import DomainError, ValidationFailed
from ..extensions import db
from ..models import Role
from . import services
from .forms import AvailabilityForm

bp = Blueprint("scheduling", __name__)


def _windows_from(form: AvailabilityForm) -> list[services.Window]:
    windows = []
    for row in form.windows:
        day, start, end = row.weekday.data, row.start.data, row.end.data
        if not (day or start or end):
            continue
        if not (day and start and end):
            raise ValidationFailed("Each line needs a day, a start and an end (or leave it empty).")
        windows.append(services.Window(int(day), int(start), int(end)))
    return windows


@bp.route("/availability", methods=["GET", "POST"])
@role_required(Role.SPECIALIST)
def availability():
    form = AvailabilityForm()
    status = 200
    if form.validate_on_submit():
        try:
            services.set_availability(me(), _windows_from(form))
        except DomainError as exc:
            db.session.rollback()
            flash(exc.message, "error")
            status = exc.status
        else:
            flash("Your availability is saved.", "success")
            return redirect(url_for(".availability"))
    elif request.method == "POST":
        status = 422
        flash("Some lines could not be read.", "error")
    else:
        for row, window in zip(form.windows, services.windows_of(me()), strict=False):
            row.weekday.data = str(window.weekday)
            row.start.data = str(window.start_minute)
            row.end.data = str(window.end_minute)
    upcoming = services.upcoming_for(me())
    slots = services.open_slots(me(), days=7)
    return render_template("scheduling/availability.html", form=form, upcoming=upcoming,
                           slots=slots[:12], slot_count=len(slots)), status
