"""Huizhen: the application factory."""

from __future__ import annotations

import logging
import os
import secrets
import sys
from datetime import timedelta
from typing import Any

import click
from flask import Flask, flash, g, has_request_context, redirect, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_url, logout_user
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from config import BASE_DIR, Config, TestingConfig, config_from_env

from .extensions import compress, csrf, db, limiter, login_manager, migrate, socketio

HSTS = "max-age=31536000; includeSubDomains"  # production responses: browsers use HTTPS only, for a year


def create_app(config: type[Config] | None = None, overrides: dict[str, Any] | None = None) -> Flask:
    """Build a configured Huizhen application."""
    app = Flask(__name__, static_folder="../static", static_url_path="/static")
    app.config.from_object(config or config_from_env())
    if overrides:
        app.config.update(overrides)
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_UPLOAD_BYTES"] + 1024 * 1024
    # The session cookie (which carries the last activity) must outlive the remember-me cookie:
    # if the browser dropped it after IDLE_TIMEOUT_MINUTES, the remember-me cookie alone would sign
    # an idle browser straight back in. Idleness itself is judged on the server (_idle_timeout).
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(seconds=max(
        app.config["IDLE_TIMEOUT_MINUTES"] * 60, app.config["REMEMBER_COOKIE_DURATION"]))
    check_production_config(app)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _local_secret_key()
    _ensure_sqlite_dir(app.config["SQLALCHEMY_DATABASE_URI"])
    if app.config["PROXY_FIX_HOPS"]:
        hops = app.config["PROXY_FIX_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    logging.basicConfig(level=logging.INFO)

    app.url_map.converters["int"] = DatabaseIdConverter
    register_extensions(app)
    register_blueprints(app)
    register_consult_hooks(app)
    from .assets import init_assets

    init_assets(app)  # /static/: hashed URLs cached for a year, precompressed
    register_namespaces(app)
    register_request_hooks(app)
    from .errors import register_error_handlers

    register_error_handlers(app)
    from .cli import register_cli

    register_cli(app)
    from .templating import register_templating

    register_templating(app)
    from .gctune import settle_garbage_collector

    settle_garbage_collector(app)  # last: what start-up built is frozen out of the collector
    return app


class DatabaseIdConverter(IntegerConverter):
    """``<int:...>`` URL parts are database ids: beyond 32 bits they match no route (404) instead
    of overflowing the database driver (500)."""

    def __init__(self, map, fixed_digits: int = 0, min: int | None = None, max: int | None = 2**31 - 1,
                 signed: bool = False) -> None:
        super().__init__(map, fixed_digits, min, max, signed)


def _local_secret_key() -> str:
    """A random key kept in instance/secret_key so development sessions survive restarts."""
    path = BASE_DIR / "instance" / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _ensure_sqlite_dir(uri: str) -> None:
    if uri.startswith("sqlite:///") and uri != "sqlite://":
        os.makedirs(os.path.dirname(os.path.abspath(uri.removeprefix("sqlite:///"))), exist_ok=True)


def check_production_config(app: Flask) -> None:
    """Refuse to start production with DEBUG, a guessable secret, odd or wildcard origins, or Werkzeug."""
    if app.config.get("ENV_NAME") != "production":
        return
    from .configcheck import origin_problem, secret_key_problem

    problems = []
    if app.config.get("DEBUG"):
        problems.append("DEBUG is on")
    secret = app.config.get("SECRET_KEY") or ""
    if secret == TestingConfig.SECRET_KEY:
        problems.append("SECRET_KEY is the testing key published in the source")
    elif problem := secret_key_problem(secret):
        problems.append(f"SECRET_KEY {problem}; generate one with "
                        "python -c 'import secrets; print(secrets.token_urlsafe(48))'")
    origins = app.config.get("ALLOWED_ORIGINS") or []
    if "*" in origins:
        problems.append("ALLOWED_ORIGINS contains '*'")
    elif not origins:
        problems.append("ALLOWED_ORIGINS is empty")
    for origin in origins:
        if origin != "*" and (problem := origin_problem(origin)):
            problems.append(f"ALLOWED_ORIGINS entry {origin!r} {problem}")
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite") and not os.environ.get(
        "HUIZHEN_ALLOW_SQLITE"
    ):
        problems.append("DATABASE_URL points at SQLite; production runs on PostgreSQL")
    ctx = click.get_current_context(silent=True)
    if (ctx is not None and ctx.info_name == "run") or (
        os.path.basename(sys.argv[0]) == "flask" and "run" in sys.argv[1:]
    ):
        problems.append("the Werkzeug development server ('flask run') is not for production")
    from .gctune import parse_thresholds

    try:
        parse_thresholds(app.config.get("GC_THRESHOLDS", "10000,20,20"))
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise RuntimeError("Refusing to start in production: " + "; ".join(problems) + ".")


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        # Let SQLAlchemy emit BEGIN itself so SAVEPOINTs and transactions behave.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()


@event.listens_for(Engine, "begin")
def _sqlite_begin(conn) -> None:
    if conn.dialect.name == "sqlite":
        # Requests and socket events take the write lock up front (IMMEDIATE), so concurrent
        # requests queue on busy_timeout instead of failing with "database is locked" when a
        # read transaction later writes. Outside a request (CLI, scripts) a plain BEGIN is enough.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if has_request_context() else "BEGIN")


def register_extensions(app: Flask) -> None:
    """Bind the extension singletons to this app."""
    from . import models  # noqa: F401  (every table known to Alembic)

    db.init_app(app)
    migrate.init_app(app, db, render_as_batch=True)
    csrf.init_app(app)
    compress.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = _l("Please sign in to continue.")
    login_manager.login_message_category = "info"
    login_manager.session_protection = "basic"
    from .i18n import init_i18n

    init_i18n(app)  # Flask-Babel: the request's language, the catalogs, the header's switch

    @login_manager.user_loader
    def load_user(key: str):
        """The user of an open, non-idle server-side session (cookie or remember-me cookie)."""
        from .auth import sessions

        loaded = sessions.load(key)
        if loaded is None:
            return None
        if loaded.expired:  # judged on the server: _idle_timeout ends it and says so
            g.huizhen_idle_session = loaded
            return None
        g.huizhen_session = loaded.session
        return loaded.user

    @login_manager.unauthorized_handler
    def _unauthorized():
        """Pages send the browser to sign in; scripts and fetch() get a 401 JSON body."""
        from .errors import error_response, wants_json

        if wants_json(request):
            return error_response(401, "unauthorized", _("Sign in to continue."))
        flash(str(login_manager.login_message), login_manager.login_message_category)  # in this request's language
        return redirect(login_url(login_manager.login_view, next_url=request.url))

    from .realtime import queue_manager, remember_server

    socketio.init_app(
        app,
        async_mode=app.config["SOCKETIO_ASYNC_MODE"],
        cors_allowed_origins=lambda origin, environ=None: origin in app.config["ALLOWED_ORIGINS"],
        message_queue=app.config["REDIS_URL"] or None,
        client_manager=queue_manager(app),  # always given: never another (earlier) app's manager
        manage_session=False,
        max_http_buffer_size=app.config["SOCKET_MAX_PAYLOAD_BYTES"],
        # One client's events are handled in the order sent: ICE candidates follow their offer,
        # and a sender's chat messages keep their order. Other clients are not held up.
        async_handlers=False,
    )
    # Every Socket.IO event that Flask-SocketIO runs in a request context matches the transport's
    # URL against the routes: with no rule for it, Flask keeps a NotFound with its traceback on the
    # request, a reference cycle of ~70 objects per event (typing, read receipts, joins) that only
    # the garbage collector frees, in stalls. This rule is never served: the Socket.IO middleware
    # answers /socket.io/ before Flask sees it.
    app.add_url_rule("/socket.io/", endpoint="socketio_transport", view_func=_socketio_transport,
                     strict_slashes=False)  # the test client asks for /socket.io, browsers for /socket.io/
    from .socketlimits import install_socket_limits

    remember_server(app, socketio.server)
    install_socket_limits(app, socketio.server)  # oversized polling bodies and WebSocket messages


def _socketio_transport() -> Any:
    """The Socket.IO transport's URL as a route (see register_extensions); never reached in practice."""
    from flask import abort

    abort(404)


def register_namespaces(app: Flask) -> None:
    """Register each domain's Socket.IO namespace explicitly."""
    from .rooms.events import NAMESPACE, RoomNamespace, presence_of

    presence_of(app)  # who is in which room: per app, shared across nodes through Redis (webapp/presence.py)
    if NAMESPACE not in socketio.server.namespace_handlers:
        socketio.on_namespace(RoomNamespace(NAMESPACE))
    from .notes.events import NAMESPACE as NOTES_NAMESPACE
    from .notes.events import NotesNamespace

    if NOTES_NAMESPACE not in socketio.server.namespace_handlers:
        socketio.on_namespace(NotesNamespace(NOTES_NAMESPACE))
    from .video.events import NAMESPACE as CALL_NAMESPACE
    from .video.events import CallNamespace, call_members

    call_members(app)

    if CALL_NAMESPACE not in socketio.server.namespace_handlers:
        socketio.on_namespace(CallNamespace(CALL_NAMESPACE))
    from .notifications.events import NAMESPACE as NOTIFY_NAMESPACE
    from .notifications.events import NotifyNamespace

    if NOTIFY_NAMESPACE not in socketio.server.namespace_handlers:
        socketio.on_namespace(NotifyNamespace(NOTIFY_NAMESPACE))


def register_blueprints(app: Flask) -> None:
    """Mount each domain's HTTP routes."""
    from .admin.routes import bp as admin_bp
    from .auth.routes import bp as auth_bp
    from .consults.opinion_routes import bp as opinions_bp
    from .consults.routes import bp as consults_bp
    from .dashboard.routes import bp as dashboard_bp
    from .notes.routes import bp as notes_bp
    from .notifications.routes import bp as notifications_bp
    from .rooms.routes import bp as rooms_bp
    from .scheduling.routes import bp as scheduling_bp
    from .video.routes import bp as video_bp

    for bp in (auth_bp, dashboard_bp, consults_bp, rooms_bp, notes_bp, scheduling_bp, admin_bp, video_bp,
               notifications_bp, opinions_bp):
        app.register_blueprint(bp)
    from .health.routes import bp as health_bp

    app.register_blueprint(health_bp)  # /healthz for load balancers: no sign-in, not audited


def register_consult_hooks(app: Flask) -> None:
    """Plug the room, call and notes domains into consults (which must not import them)."""
    from .consults import hooks
    from .models import Role
    from .notes import services as notes
    from .rooms import services as rooms
    from .video import services as video

    hooks.add_page_context(app, lambda user, consult: {
        "can_enter_room": rooms.can_enter(user, consult),
        "room_opens_at": rooms.opens_at(consult),
    })
    hooks.add_page_context(app, lambda user, consult: {
        "calls": video.calls_of(consult) if user.role == Role.COORDINATOR else [],
    })
    hooks.add_sign_off(app, notes.sign_notes)  # the shared notes are fixed with the signature
    hooks.provide_shared_notes(app, notes.text_of)


def register_request_hooks(app: Flask) -> None:
    """Idle sign-out and security headers."""

    @app.before_request
    def _refuse_nul_characters():
        """A NUL character is never valid text, and PostgreSQL refuses it outright (a 500)."""
        values = [request.path, *request.args.keys(), *request.args.values()]
        if request.method in ("POST", "PUT", "PATCH"):
            values += [*request.form.keys(), *request.form.values()]
        if any("\x00" in value for value in values):
            from .errors import error_response

            return error_response(400, "bad_request", _("The request contains a character that is not allowed."))
        return None

    @app.before_request
    def _idle_timeout():
        """Idleness is judged from the server-side session record, never from the cookie."""
        if request.endpoint == "static":
            return None
        from .auth import sessions

        signed_in = current_user.is_authenticated  # loads the session (see load_user)
        idle = g.pop("huizhen_idle_session", None)
        if idle is not None:
            sessions.end_idle(idle.user, idle.session)
            logout_user()  # the remember-me cookie goes too
            from .errors import error_response, wants_json
            from .i18n import clean_locale, current_locale, speaking

            with speaking(clean_locale(idle.user.locale) or current_locale()):  # still the user's language
                flash(_("You were signed out after a period of inactivity. Please sign in again."), "info")
                if wants_json(request):
                    return error_response(401, "session_expired", _("Your session expired. Sign in again."))
            return redirect(url_for("auth.login", next=request.full_path if request.method == "GET" else None))
        if signed_in and "huizhen_session" in g:
            sessions.touch(g.huizhen_session)
            session.permanent = True
        return None

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
            "connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'; "
            "object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
        )
        if request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")
        if app.config.get("ENV_NAME") == "production":  # browsers then refuse plain HTTP to the site
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        return response
