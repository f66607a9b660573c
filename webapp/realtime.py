"""Emitting real-time events after a commit, through the current app's Socket.IO server."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, current_app, g
from flask_login import current_user

from .errors import DomainError, ValidationFailed
from .extensions import db

log = logging.getLogger(__name__)
SERVER_KEY = "huizhen.socketio_server"


def remember_server(app: Flask, server: Any) -> None:
    """Keep the Socket.IO server built for this app (tests build several apps)."""
    app.extensions[SERVER_KEY] = server


def emit(event: str, data: Any, *, to: str, namespace: str, skip_sid: str | None = None) -> bool:
    """Emit to a room; a message-queue or transport failure is logged, never raised.

    Everything emitted here is already committed: a client that misses the event
    backfills it from the database on its next join or reconnect.
    """
    try:
        current_app.extensions[SERVER_KEY].emit(event, data, to=to, namespace=namespace, skip_sid=skip_sid)
        return True
    except Exception:
        log.exception("could not emit %s to %s; clients will backfill", event, to)
        return False


def error_ack(exc: DomainError) -> dict[str, Any]:
    """A Socket.IO error acknowledgement for a domain error."""
    return {"ok": False, "error": exc.code, "message": exc.message, "status": exc.status}


def handler(fn: Callable | None = None, *, remove_session: bool = False) -> Callable:
    """Validate the payload, run the handler, and turn every failure into an error ack.

    The user is loaded afresh for every event (a suspended or signed-out account is refused at
    once). remove_session ends the database session after the event (the notes namespace keeps
    no ORM state between events).
    """
    if fn is None:
        return lambda f: handler(f, remove_session=remove_session)

    @wraps(fn)
    def wrapped(self, data: Any = None, *extra: Any) -> dict[str, Any]:
        try:
            g.pop("_login_user", None)
            if not current_user.is_authenticated:
                raise ValidationFailed("Your session has ended; sign in again.")
            if extra or not isinstance(data, dict):  # extra arguments would be a TypeError, no ack
                raise ValidationFailed("The payload must be a JSON object.")
            if len(json.dumps(data, default=str)) > current_app.config["SOCKET_MAX_PAYLOAD_BYTES"]:
                raise ValidationFailed("The payload is too large.")
            return fn(self, data)
        except DomainError as exc:
            db.session.rollback()
            return error_ack(exc)
        except Exception:
            db.session.rollback()
            log.exception("socket event %s failed", fn.__name__)
            return {"ok": False, "error": "server_error", "message": "Something went wrong; try again.",
                    "status": 500}
        finally:
            if remove_session:
                db.session.remove()

    return wrapped
