"""The notification list, mark read, preferences; the bell's count on every page."""

from __future__ import annotations

from flask import Blueprint, flash, jsonify, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user

from ..auth.decorators import me, role_required
from ..errors import ValidationFailed
from ..models import Role
from . import services
from .forms import MarkReadForm, PreferencesForm

bp = Blueprint("notifications", __name__, url_prefix="/notifications")
ROLES = (Role.RURAL_DOCTOR, Role.SPECIALIST, Role.COORDINATOR)


@bp.app_context_processor
def _bell() -> dict:
    def unread() -> int:
        return services.unread_count(current_user.id) if current_user.is_authenticated else 0

    return {"notifications_unread": unread}


@bp.record_once
def _check_targets(state) -> None:
    """A malformed RESPONSE_TARGET_MINUTES stops the app at start, not every worker pass."""
    from .reminders import parse_targets

    configured = state.app.config.get("RESPONSE_TARGET_MINUTES")
    if isinstance(configured, str):
        parse_targets(configured)


@bp.app_context_processor
def _response_times() -> dict:
    from . import reminders

    return {"expected_response": reminders.expected_response, "response_left": reminders.time_left,
            "response_targets": reminders.targets_sentence}


@bp.get("")
@role_required(*ROLES)
def index():
    notes = services.list_for(me())
    return render_template("notifications/list.html", notes=[(n, services.wire(n)) for n in notes],
                           form=MarkReadForm())


@bp.get("/unread")
@role_required(*ROLES)
def unread():
    return jsonify({"unread": services.unread_count(me().id)})


@bp.post("/<int:notification_id>/read")
@role_required(*ROLES)
def mark_read(notification_id: int):
    if not MarkReadForm().validate_on_submit():
        raise ValidationFailed("The form expired; reload the page and try again.")
    services.mark_read(me(), notification_id)
    return redirect(url_for("notifications.index"))


@bp.post("/read-all")
@role_required(*ROLES)
def mark_all_read():
    if not MarkReadForm().validate_on_submit():
        raise ValidationFailed("The form expired; reload the page and try again.")
    services.mark_all_read(me())
    return redirect(url_for("notifications.index"))


def _minutes(value) -> int | None:
    return None if value is None else value.hour * 60 + value.minute


@bp.route("/preferences", methods=["GET", "POST"])
@role_required(*ROLES)
def preferences():
    pref = services.preferences_of(me())
    form = PreferencesForm()
    if form.validate_on_submit():
        try:
            services.save_preferences(me(), form.muted.data or [], _minutes(form.quiet_start.data),
                                      _minutes(form.quiet_end.data))
        except ValidationFailed as exc:
            form.quiet_start.errors = [exc.message]
            return render_template("notifications/preferences.html", form=form), 422
        flash(_("Notification preferences saved."), "success")
        return redirect(url_for("notifications.preferences"))
    if form.is_submitted():
        return render_template("notifications/preferences.html", form=form), 422
    from datetime import time

    form.muted.data = list(pref.muted or [])
    if pref.quiet_start is not None and pref.quiet_end is not None:
        form.quiet_start.data = time(pref.quiet_start // 60, pref.quiet_start % 60)
        form.quiet_end.data = time(pref.quiet_end // 60, pref.quiet_end % 60)
    return render_template("notifications/preferences.html", form=form)


@bp.get("/failed")
@role_required(Role.COORDINATOR)
def failed():
    from .delivery import failed_deliveries

    return render_template("notifications/failed.html", deliveries=failed_deliveries())
