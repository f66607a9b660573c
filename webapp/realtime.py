"""Emitting real-time events after a commit, through the current app's Socket.IO server."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from functools import wraps
from typing import Any, NamedTuple

from flask import Flask, current_app, g, request, session
from flask_login import current_user

from . import ratelimit
from .errors import DomainError, ValidationFailed
from .extensions import db

log = logging.getLogger(__name__)
SERVER_KEY = "huizhen.socketio_server"
CONNECTIONS_KEY = "huizhen.connections"


class Entry(NamedTuple):
    """One joined connection: the consult's room it is in and the user behind it."""

    consult_id: int
    user_id: int
    name: str = ""
    ref: str = ""


class Connections:
    """Which connection (sid) is in which consult's room of one namespace, in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_sid: dict[str, Entry] = {}

    def add(self, sid: str, consult_id: int, user_id: int, name: str = "", ref: str = "") -> None:
        with self._lock:
            self._by_sid[sid] = Entry(consult_id, user_id, name, ref)

    def remove(self, sid: str) -> Entry | None:
        with self._lock:
            return self._by_sid.pop(sid, None)

    def entry(self, sid: str) -> Entry | None:
        """The connection's room and user, if it has joined one."""
        with self._lock:
            return self._by_sid.get(sid)

    def consult_of(self, sid: str) -> int | None:
        with self._lock:
            entry = self._by_sid.get(sid)
            return entry.consult_id if entry else None

    def people(self, consult_id: int) -> list[dict[str, Any]]:
        """The users connected to a consult's room, each with their number of connections."""
        with self._lock:
            seen: dict[int, dict[str, Any]] = {}
            for cid, uid, name, _ in self._by_sid.values():
                if cid == consult_id:
                    seen.setdefault(uid, {"user_id": uid, "name": name, "connections": 0})
                    seen[uid]["connections"] += 1
            return sorted(seen.values(), key=lambda p: p["user_id"])

    def others(self, consult_id: int, sid: str) -> list[int]:
        """User ids of the other connections in a consult's room."""
        with self._lock:
            return [e.user_id for s, e in self._by_sid.items() if e.consult_id == consult_id and s != sid]


def connections(namespace: str, app: Flask | None = None) -> Connections:
    """This app's (this process's) connection table for a namespace; a new app starts empty."""
    app = app or current_app._get_current_object()
    return app.extensions.setdefault(CONNECTIONS_KEY, {}).setdefault(namespace, Connections())


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
    ack = {"ok": False, "error": exc.code, "message": exc.message, "status": exc.status}
    if getattr(exc, "retry_after", None) is not None:  # rate_limited: when to try again, in seconds
        ack["retry_after"] = exc.retry_after  # type: ignore[attr-defined]
    return ack


def require_user() -> None:
    """Load the session's user afresh; a signed-out or suspended account is refused."""
    g.pop("_login_user", None)
    if not current_user.is_authenticated:
        raise ValidationFailed("Your session has ended; sign in again.")


def _user_key(authenticated: bool) -> str:
    """Who sends, for the per-user event limits (a handler that proves the session itself has not
    loaded the user: its login token, hashed, stands for the user)."""
    if authenticated:
        return str(current_user.id)
    return ratelimit.hashed(str(session.get("_user_id") or request.sid))


def handler(fn: Callable | None = None, *, remove_session: bool = False, authenticate: bool = True) -> Callable:
    """Validate the payload, run the handler, and turn every failure into an error ack.

    The user is loaded afresh for every event (a suspended or signed-out account is refused at
    once). A handler with authenticate=False makes that check itself (the chat send path proves
    the session in the same SQL statement that stores the message, and calls require_user() on
    any other path). remove_session ends the database session after the event (the notes
    namespace keeps no ORM state between events).

    Each event kind is rate-limited per connection (before any database work) and per user
    (ratelimit.check_event): over the limit the ack is rate_limited and nothing is relayed.
    """
    if fn is None:
        return lambda f: handler(f, remove_session=remove_session, authenticate=authenticate)

    event = fn.__name__.removeprefix("on_")

    @wraps(fn)
    def wrapped(self, data: Any = None, *extra: Any) -> dict[str, Any]:
        try:
            ratelimit.check_event(self.namespace, event, sid=request.sid)  # before any database work
            if authenticate:
                require_user()
            ratelimit.check_event(self.namespace, event, user=_user_key(authenticate))
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
