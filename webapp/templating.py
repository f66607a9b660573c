"""Jinja filters and globals: times in the viewer's zone, labels, badges."""

from __future__ import annotations

from datetime import datetime

from flask import Flask
from flask_login import current_user

from .audit.labels import action_label
from .i18n import N_, translate
from .models import utcnow
from .models.user import specialty_label
from .timefmt import format_duration, format_local


def _viewer_tz() -> str | None:
    return current_user.timezone if current_user and current_user.is_authenticated else None


def register_templating(app: Flask) -> None:
    """Register the filters used by the templates."""

    @app.template_filter("localtime")
    def localtime(dt: datetime | None, tz: str | None = None) -> str:
        return format_local(dt, tz or _viewer_tz())

    @app.template_filter("waited")
    def waited(dt: datetime | None) -> str:
        if dt is None:
            return "—"
        seconds = (utcnow() - dt).total_seconds()
        return translate(N_("< 1 min")) if seconds < 60 else format_duration(seconds)

    @app.template_filter("filesize")
    def filesize(n: int) -> str:
        if n >= 1024 * 1024:
            return translate(N_("%(size)s MB"), {"size": f"{n / (1024 * 1024):.1f}"})
        return translate(N_("%(size)s KB"), {"size": max(1, n // 1024)})

    app.add_template_filter(action_label, "action_label")  # audit codes read as words everywhere

    def may(consult: object, action: str) -> bool:
        """Whether the signed-in user may take the action on the consult (consults.policy decides)."""
        from .consults import policy  # the policy imports the models; keep templating import-light

        if not (current_user and current_user.is_authenticated):
            return False
        return policy.allows(current_user, consult, policy.Action(action))  # type: ignore[arg-type]

    def role_in(consult: object) -> str | None:
        """The signed-in user's participant role in the consult (its value), or None."""
        from .consults import policy

        if not (current_user and current_user.is_authenticated):
            return None
        role = policy.role_of(current_user, consult)  # type: ignore[arg-type]
        return role.value if role is not None else None

    @app.context_processor
    def _globals() -> dict:
        return {"now_utc": utcnow(), "specialty_label": specialty_label, "may": may, "role_in": role_in}
