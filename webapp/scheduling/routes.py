"""Specialists publish their weekly availability."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for

from ..auth.decorators import me, role_required
from ..errors import DomainError, ValidationFailed
from ..extensions import db
from ..models import Role
from . import services
from .forms import BLANK_ROWS, MAX_WINDOWS, AvailabilityForm

bp = Blueprint("scheduling", __name__)


def _windows_from(form: AvailabilityForm) -> list[services.Window]:
    windows = []
    for row in form.windows:
        day, start, end = row.weekday.data, row.start.data, row.end.data
        if row.remove.data or not (day or start or end):
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
    valid = form.validate_on_submit()
    if valid and form.add_row.data:
        # Re-show what was typed with one more empty row; nothing is saved yet.
        if len(form.windows) < MAX_WINDOWS:
            form.windows.append_entry()
    elif valid:
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
        # One row per stored window (never fewer: a save must not drop any) plus empty rows.
        while len(form.windows):
            form.windows.pop_entry()
        for window in services.windows_of(me()):
            form.windows.append_entry({"weekday": str(window.weekday), "start": str(window.start_minute),
                                       "end": str(window.end_minute)})
        for _ in range(BLANK_ROWS):
            form.windows.append_entry()
    upcoming = services.upcoming_for(me())
    slots = services.open_slots(me(), days=7)
    return render_template("scheduling/availability.html", form=form, upcoming=upcoming,
                           slots=slots[:12], slot_count=len(slots)), status
