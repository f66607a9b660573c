"""Domain exceptions and the one place that maps them to HTTP responses."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Request, jsonify, render_template, request
from flask_babel import gettext as _
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from .i18n import N_

log = logging.getLogger(__name__)


class DomainError(Exception):
    """A use case refused: carries an HTTP status, a machine code and a message with its parameters.

    The message is an English gettext msgid with %(name)s placeholders, never a composed sentence:
    ``ValidationFailed("Leave can span at most %(days)s days.", days=30)``. Services only raise;
    ``message`` (and ``field_messages``) are translated into the request's language when read, by
    the presentation layer (the error handler, a form, a Socket.IO acknowledgement).
    """

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, fields: dict[str, str] | None = None,
                 field_messages: dict[str, str] | None = None, **params: Any) -> None:
        self.template = message
        self.params = params
        super().__init__(message % params if params else message)
        self.fields = fields or {}  # field name -> machine code ("required", "invalid", ...)
        self._field_messages = field_messages or {}  # field name -> what to do, shown at the field

    @property
    def message(self) -> str:
        """The message in the current request's language, its parameters filled in."""
        from .i18n import translate

        return translate(self.template, self.params)

    @property
    def field_messages(self) -> dict[str, str]:
        """Per-field messages in the current request's language."""
        from .i18n import translate

        return {k: translate(v, self.params) for k, v in self._field_messages.items()}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        return body


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class InvalidTransition(DomainError):
    status = 409
    code = "invalid_transition"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class ValidationFailed(DomainError):
    status = 422
    code = "invalid_input"


class UnsupportedFile(DomainError):
    status = 415
    code = "unsupported_file"


class FileTooLarge(DomainError):
    status = 413
    code = "file_too_large"


def wants_json(req: Request) -> bool:
    """True when the caller is a script or fetch() rather than a page."""
    if req.is_json or req.path.startswith("/api/"):
        return True
    best = req.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "application/json" and req.accept_mimetypes[best] > req.accept_mimetypes["text/html"]


def error_response(status: int, code: str, message: str, fields: dict[str, str] | None = None):
    """Render an error as JSON or as a page, with its status."""
    if wants_json(request):
        body: dict[str, Any] = {"error": code, "message": message}
        if fields:
            body["fields"] = fields
        return jsonify(body), status
    return render_template("error.html", status=status, message=message), status


def register_error_handlers(app: Flask) -> None:
    """Turn domain errors, CSRF failures, throttling and HTTP errors into clear responses."""

    @app.errorhandler(DomainError)
    def _domain(exc: DomainError):
        return error_response(exc.status, exc.code, exc.message, exc.fields)

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError):
        return error_response(
            400, "csrf_failed",
            _("This form has expired or was not sent from Huizhen. Reload the page and try again."),
        )

    @app.errorhandler(RateLimitExceeded)
    def _throttled(exc: RateLimitExceeded):
        return error_response(
            429, "too_many_requests", _("Too many attempts. Wait a minute and try again.")
        )

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        messages = {
            400: N_("The request could not be understood. Reload the page and try again."),
            401: N_("Sign in to continue."),
            403: N_("You do not have access to this page."),
            404: N_("This page does not exist, or you do not have access to it."),
            405: N_("That action is not allowed here."),
            413: N_("The upload is larger than the limit."),
        }
        code = exc.code or 500
        message = _(messages[code]) if code in messages else _("The request could not be completed.")
        return error_response(exc.code or 500, exc.name.lower().replace(" ", "_"), message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(
            500, "server_error", _("Something went wrong on our side and it has been logged. Please try again.")
        )
