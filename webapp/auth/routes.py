"""Sign in, sign out, register, change password."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select

from ..errors import DomainError
from ..extensions import db, limiter
from ..i18n import current_locale
from ..models import Facility, Role
from ..validation import safe_local_path
from . import services
from .forms import ForgotPasswordForm, LoginForm, PasswordChangeForm, RegistrationForm, ResetPasswordForm

bp = Blueprint("auth", __name__)


def _login_key() -> str:
    """Throttle per submitted email too, whether or not that account exists."""
    return "login:" + (request.form.get("email") or "").strip().lower()[:254]


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site, else the dashboard."""
    return safe_local_path(target) or url_for("dashboard.index")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"], key_func=_login_key)
def login():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = services.authenticate(form.email.data, form.password.data)
        except DomainError as exc:
            flash(exc.message, "error")
            status = exc.status
        else:
            session.clear()  # a fresh session (and CSRF token) for the signed-in user
            login_user(user, remember=form.remember.data)
            return redirect(_safe_next(request.args.get("next")))
    elif request.method == "POST":
        status = 422
    return render_template("auth/login.html", form=form), status


@bp.post("/logout")
@login_required
def logout():
    services.end_sessions(current_user._get_current_object(), "logout")
    logout_user()
    session.clear()
    flash(_("You have signed out."), "info")
    return redirect(url_for("auth.login"))


def _facility_choices() -> list[tuple[int, str]]:
    facilities = db.session.scalars(select(Facility).order_by(Facility.region, Facility.name))
    return [(0, _("Choose your facility…"))] + [
        (f.id, _("%(name)s — %(level)s, %(region)s", name=f.name, level=f.level.label, region=f.region))
        for f in facilities
    ]


@bp.route("/register", methods=["GET", "POST"])
@limiter.limit("20 per hour", methods=["POST"])
def register():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = RegistrationForm()
    form.facility_id.choices = _facility_choices()
    status = 200
    if form.validate_on_submit():
        try:  # the same answer whether or not the email already has an account
            services.register(services.Registration(
                email=form.email.data, password=form.password.data, full_name=form.full_name.data,
                role=Role(form.role.data), facility_id=form.facility_id.data,
                licence_number=form.licence_number.data, timezone=form.timezone.data,
                languages=tuple(form.languages.data), specialty=form.specialty.data or None,
                locale=current_locale(),  # mail and notifications go out in the language registered in
            ))
        except DomainError as exc:
            db.session.rollback()
            for field, _ in exc.fields.items():
                if field in form:
                    form[field].errors = [*form[field].errors, exc.message]
            flash(exc.message, "error")
            status = exc.status
        else:
            return render_template("auth/registered.html"), 201
    elif request.method == "POST":
        status = 422
    return render_template("auth/register.html", form=form), status


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password():
    form = PasswordChangeForm()
    status = 200
    if form.validate_on_submit():
        user = current_user._get_current_object()
        try:
            services.change_password(user, form.current_password.data, form.new_password.data)
        except DomainError as exc:
            flash(exc.message, "error")
            status = exc.status
        else:
            session.clear()
            login_user(user)  # this device stays signed in (a new session); every other one has ended
            flash(_("Your password was changed. Other devices have been signed out."), "success")
            return redirect(url_for("dashboard.index"))
    elif request.method == "POST":
        status = 422
    return render_template("auth/password.html", form=form), status


@bp.route("/password/forgot", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"], key_func=_login_key)
def forgot_password():
    form = ForgotPasswordForm()
    status = 200
    if form.validate_on_submit():
        services.request_password_reset(form.email.data)  # says nothing about the account
        flash(_("If an approved account uses this address, we have sent it a link to reset the password. "
                "The link works once, for %(minutes)s minutes.",
                minutes=current_app.config["PASSWORD_RESET_MINUTES"]), "info")
        return redirect(url_for("auth.login"))
    if request.method == "POST":
        status = 422
    return render_template("auth/forgot.html", form=form), status


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"])
def reset_password(token: str):
    services.check_reset_link(token)  # an unknown, used or expired link: a clear 400 page
    form = ResetPasswordForm()
    status = 200
    if form.validate_on_submit():
        try:
            services.reset_password(token, form.new_password.data)
        except DomainError as exc:
            if isinstance(exc, services.ResetLinkInvalid):
                raise
            flash(exc.message, "error")
            status = exc.status
        else:
            if current_user.is_authenticated:
                logout_user()
            session.clear()
            flash(_("Your password was changed and every device was signed out. Sign in with the new password."),
                  "success")
            return redirect(url_for("auth.login"))
    elif request.method == "POST":
        status = 422
    return render_template("auth/reset.html", form=form), status
