"""Specialists publish their weekly availability."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from ..auth.decorators import me, role_required
from ..errors import DomainError, ValidationFailed
from ..extensions import db
from ..forms import AppForm
from ..models import Role, utcnow
from ..timefmt import local
from . import calendar as calendar_feeds
from . import services
from .forms import BLANK_ROWS, MAX_WINDOWS, AvailabilityForm, ExtraHoursForm, LeaveForm

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
            flash(_("Your availability is saved."), "success")
            return redirect(url_for(".availability"))
    elif request.method == "POST":
        status = 422
        flash(_("Some lines could not be read."), "error")
    else:
        # One row per stored window (never fewer: a save must not drop any) plus empty rows.
        form = _windows_page()
    return _page(form, LeaveForm(formdata=None), ExtraHoursForm(formdata=None), status)


def _page(form: AvailabilityForm, leave_form: LeaveForm, extra_form: ExtraHoursForm, status: int):
    upcoming = services.upcoming_for(me())
    slots = services.open_slots(me(), days=7)
    today = local(utcnow(), me().timezone).date()
    return render_template("scheduling/availability.html", form=form, upcoming=upcoming,
                           slots=slots[:12], slot_count=len(slots), leave_form=leave_form,
                           extra_form=extra_form, exceptions=services.exceptions_of(me(), since=today),
                           ), status


def _windows_page() -> AvailabilityForm:
    form = AvailabilityForm(formdata=None)
    while form.windows.entries:
        form.windows.pop_entry()
    for window in services.windows_of(me()):
        form.windows.append_entry({"weekday": str(window.weekday), "start": str(window.start_minute),
                                   "end": str(window.end_minute)})
    for _blank in range(BLANK_ROWS):
        form.windows.append_entry()
    return form


def _exception_added(form: LeaveForm | ExtraHoursForm, add: Callable[[], object]) -> Response | int:
    """Run add() for a valid form: a redirect when saved, else the status to show the page with."""
    status = 422
    if form.validate_on_submit():
        try:
            add()
        except DomainError as exc:
            db.session.rollback()
            flash(exc.message, "error")
            status = exc.status
        else:
            flash(_("Your availability is saved."), "success")
            return redirect(url_for(".availability"))
    else:
        flash(_("Some fields could not be read."), "error")
    return status


@bp.route("/availability/leave", methods=["POST"])
@role_required(Role.SPECIALIST)
def add_leave():
    form = LeaveForm()
    result = _exception_added(form, lambda: services.add_leave(
        me(), form.first_day.data, form.last_day.data, form.note.data or ""))
    if not isinstance(result, int):
        return result
    return _page(_windows_page(), form, ExtraHoursForm(formdata=None), result)


@bp.route("/availability/extra", methods=["POST"])
@role_required(Role.SPECIALIST)
def add_extra():
    form = ExtraHoursForm()
    result = _exception_added(form, lambda: services.add_extra_hours(
        me(), form.day.data, int(form.start.data), int(form.end.data), form.note.data or ""))
    if not isinstance(result, int):
        return result
    return _page(_windows_page(), LeaveForm(formdata=None), form, result)


@bp.route("/availability/exceptions/<int:exception_id>/delete", methods=["POST"])
@role_required(Role.SPECIALIST)
def remove_exception(exception_id: int):
    form = AppForm()
    if not form.validate_on_submit():
        abort(400)
    services.remove_exception(me(), exception_id)
    flash(_("Removed."), "success")
    return redirect(url_for(".availability"))


@bp.get("/calendar")
@role_required(Role.RURAL_DOCTOR, Role.SPECIALIST)
def calendar():
    return _calendar_page(url=None)


def _calendar_page(url: str | None):
    """The calendar page: the user's feed, and its address right after it was issued (shown once)."""
    return render_template("scheduling/calendar.html", feed=calendar_feeds.feed_of(me()), url=url, form=AppForm())


@bp.post("/calendar/feed")
@role_required(Role.RURAL_DOCTOR, Role.SPECIALIST)
def issue_feed():
    if not AppForm().validate_on_submit():
        abort(400)
    token = calendar_feeds.issue_feed(me())
    return _calendar_page(url=url_for(".feed", token=token, _external=True))


@bp.post("/calendar/feed/revoke")
@role_required(Role.RURAL_DOCTOR, Role.SPECIALIST)
def revoke_feed():
    if not AppForm().validate_on_submit():
        abort(400)
    calendar_feeds.revoke_feed(me())
    flash(_("Your calendar feed is revoked; its address no longer works."), "success")
    return redirect(url_for(".calendar"))


@bp.get("/calendar/<token>.ics")
def feed(token: str):
    user = calendar_feeds.owner_of(token)
    if user is None or not user.is_active:
        abort(404)
    response = Response(calendar_feeds.feed_ics(user), mimetype="text/calendar")
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
