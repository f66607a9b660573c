"""Emitting real-time events after a commit, through the current app's Socket.IO server."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from functools import wraps
from typing import Any, NamedTuple

import socketio
from flask import Flask, current_app, g
from flask_login import current_user
from flask_socketio import ConnectionRefusedError
from sqlalchemy.exc import SQLAlchemyError

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


class PublishFailed(RuntimeError):
    """The message queue did not take an event: other nodes' clients will not get it live."""


class ReportingRedisManager(socketio.RedisManager):
    """python-socketio's Redis manager, except that an emit whose publish gave up raises.

    The stock manager logs "Cannot publish to redis... giving up" and returns, so the caller
    believes the event went out. This node's own clients have already been served (the manager
    delivers locally before it publishes); PublishFailed tells the caller that the other nodes'
    clients were not, so they rely on the clients' resync check (see the Real time section of
    docs/architecture.md).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._outcome = threading.local()  # greenlet-local under gevent's monkey-patching
        self.publish_failures = 0

    def _publish(self, data: Any) -> Any:
        result = super()._publish(data)
        if result is None:  # the stock manager returns None only when it gave up
            self.publish_failures += 1
            self._outcome.failed = True
        return result

    def emit(self, event: str, data: Any, namespace: str | None = None, room: str | None = None,
             skip_sid: str | None = None, callback: Any = None, to: str | None = None, **kwargs: Any) -> None:
        self._outcome.failed = False
        super().emit(event, data, namespace=namespace, room=room, skip_sid=skip_sid, callback=callback,
                     to=to, **kwargs)
        if self._outcome.failed:
            self._outcome.failed = False
            raise PublishFailed(f"the message queue did not take {event!r}")


def queue_manager(app: Flask) -> socketio.Manager | None:
    """The client manager for this app: Redis (failures reported) when REDIS_URL is set, else local."""
    url = app.config["REDIS_URL"]
    if not url:
        return None  # python-socketio's in-process manager
    if not url.startswith(("redis://", "rediss://")):
        raise RuntimeError("REDIS_URL must be a redis:// or rediss:// URL.")
    return ReportingRedisManager(url, channel="flask-socketio")


def authenticate_connection() -> None:
    """Accept a namespace connect only for a signed-in user; refuse with a reason the client acts on.

    'unauthorized': no valid session (the page sends the user to sign in). 'unavailable': the
    user could not be loaded because the database failed; the client retries with backoff. A
    connect handler that raised anything else would send neither CONNECT nor CONNECT_ERROR, and
    socket.io-client would wait on the namespace for ever.
    """
    try:
        authenticated = current_user.is_authenticated
    except SQLAlchemyError as exc:
        log.warning("refusing a socket connect while the database fails: %s", exc.__class__.__name__)
        try:
            db.session.rollback()
        finally:
            db.session.remove()
        raise ConnectionRefusedError(
            "unavailable", {"retry_after_ms": current_app.config["SOCKET_RETRY_AFTER_MS"]}) from None
    if not authenticated:
        raise ConnectionRefusedError("unauthorized")


def emit(event: str, data: Any, *, to: str, namespace: str, skip_sid: str | None = None) -> bool:
    """Emit to a room; a message-queue or transport failure is logged, never raised.

    Everything emitted here is already committed: a client that misses the event
    backfills it from the database on its next join or reconnect.
    """
    try:
        current_app.extensions[SERVER_KEY].emit(event, data, to=to, namespace=namespace, skip_sid=skip_sid)
        return True
    except PublishFailed:  # this node's clients were served; the others' resync check catches up
        log.warning("the message queue did not take %s to %s; other nodes' clients will resync", event, to)
        return False
    except Exception:
        log.exception("could not emit %s to %s; clients will backfill", event, to)
        return False


def error_ack(exc: DomainError) -> dict[str, Any]:
    """A Socket.IO error acknowledgement for a domain error."""
    return {"ok": False, "error": exc.code, "message": exc.message, "status": exc.status}


def require_user() -> None:
    """Load the session's user afresh; a signed-out or suspended account is refused."""
    g.pop("_login_user", None)
    if not current_user.is_authenticated:
        raise ValidationFailed("Your session has ended; sign in again.")


def handler(fn: Callable | None = None, *, remove_session: bool = False, authenticate: bool = True) -> Callable:
    """Validate the payload, run the handler, and turn every failure into an error ack.

    The user is loaded afresh for every event (a suspended or signed-out account is refused at
    once). A handler with authenticate=False makes that check itself (the chat send path proves
    the session in the same SQL statement that stores the message, and calls require_user() on
    any other path). remove_session ends the database session after the event (the notes
    namespace keeps no ORM state between events).
    """
    if fn is None:
        return lambda f: handler(f, remove_session=remove_session, authenticate=authenticate)

    @wraps(fn)
    def wrapped(self, data: Any = None, *extra: Any) -> dict[str, Any]:
        try:
            if authenticate:
                require_user()
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
