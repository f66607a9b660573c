"""Emitting real-time events after a commit, through the current app's Socket.IO server."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from functools import wraps
from typing import Any, NamedTuple

import socketio
from flask import Flask, current_app, g, request, session
from flask_babel import gettext as _
from flask_login import current_user
from flask_socketio import ConnectionRefusedError
from sqlalchemy.exc import SQLAlchemyError

from . import presence, ratelimit
from .errors import DomainError, ValidationFailed
from .extensions import db
from .presence import Listener, Member, SharedPresence, Snapshot
from .validation import check_payload

log = logging.getLogger(__name__)
SERVER_KEY = "huizhen.socketio_server"
CONNECTIONS_KEY = "huizhen.connections"
PRESENCE_KEY = "huizhen.presence"
_tables_lock = threading.RLock()


class Entry(NamedTuple):
    """One joined connection: the consult's room it is in and the user behind it."""

    consult_id: int
    user_id: int
    name: str = ""
    ref: str = ""
    token: str = ""  # the login token of the connection's session cookie (fixed at connect)


class Connections:
    """Which connection (sid) is in which consult's room of one namespace.

    The sid → entry map is this process's own (the chat send path reads it with no I/O). With a
    shared store (REDIS_URL) each room's members are also kept in Redis, so people() and others()
    answer for the whole cluster (webapp/presence.py); without one, or while Redis fails, they
    answer from this process's connections.
    """

    def __init__(self, namespace: str = "", shared: SharedPresence | None = None, app: Flask | None = None) -> None:
        self.namespace = namespace
        self.shared = shared
        self._app = app
        self._lock = threading.Lock()
        self._by_sid: dict[str, Entry] = {}
        # consult id -> {sid: entry}: a room's local members without walking every connection
        # (the chat send path asks for one room's members on every message)
        self._by_consult: dict[int, dict[str, Entry]] = {}
        self._listeners: list[Listener] = []
        if shared is not None:
            shared.watch(self)

    def add(self, sid: str, consult_id: int, user_id: int, name: str = "", ref: str = "", token: str = "") -> None:
        entry = Entry(consult_id, user_id, name, ref, token)
        with self._lock:
            previous = self._by_sid.get(sid)
            if previous is not None:
                self._unindex(sid, previous)
            self._by_sid[sid] = entry
            self._by_consult.setdefault(consult_id, {})[sid] = entry
        if self.shared is not None:
            if previous is not None and previous.consult_id != consult_id:  # it moved to another room
                self.shared.remove(self.namespace, previous.consult_id, sid)
            self.shared.add(self.namespace, consult_id, sid, user_id, name)

    def remove(self, sid: str) -> Entry | None:
        with self._lock:
            entry = self._by_sid.pop(sid, None)
            if entry is not None:
                self._unindex(sid, entry)
        if entry is not None and self.shared is not None:
            self.shared.remove(self.namespace, entry.consult_id, sid)
        return entry

    def _unindex(self, sid: str, entry: Entry) -> None:
        room = self._by_consult.get(entry.consult_id)
        if room is not None:
            room.pop(sid, None)
            if not room:
                del self._by_consult[entry.consult_id]

    def entry(self, sid: str) -> Entry | None:
        """The connection's room and user, if it has joined one."""
        with self._lock:
            return self._by_sid.get(sid)

    def sids(self) -> list[str]:
        """The connections (sids) of this process that have joined a room."""
        with self._lock:
            return list(self._by_sid)

    def consult_of(self, sid: str) -> int | None:
        with self._lock:
            entry = self._by_sid.get(sid)
            return entry.consult_id if entry else None

    def local_rooms(self) -> dict[int, list[tuple[str, int, str]]]:
        """This process's connections by consult: (sid, user id, name)."""
        with self._lock:
            rooms: dict[int, list[tuple[str, int, str]]] = {}
            for sid, e in self._by_sid.items():
                rooms.setdefault(e.consult_id, []).append((sid, e.user_id, e.name))
            return rooms

    def local_members(self, consult_id: int) -> list[Member]:
        """This process's connections in one consult's room (indexed: no walk over every connection)."""
        with self._lock:
            room = self._by_consult.get(consult_id)
            return [Member(sid, e.user_id, e.name) for sid, e in room.items()] if room else []

    def snapshot(self, consult_id: int) -> Snapshot:
        """The room's connections across the cluster (or in this process only, rev None, without Redis)."""
        if self.shared is not None:
            snap = self.shared.snapshot(self.namespace, consult_id)
            if snap is not None:
                return snap
        return Snapshot(self.local_members(consult_id), None, [])

    def people(self, consult_id: int) -> list[dict[str, Any]]:
        """The users connected to a consult's room, each with their number of connections."""
        return presence.people(self.snapshot(consult_id).members)

    def others(self, consult_id: int, sid: str) -> list[int]:
        """User ids of the other connections in a consult's room."""
        return [m.user_id for m in self.snapshot(consult_id).members if m.sid != sid]

    def on_change(self, listener: Listener) -> None:
        """Call listener(consult_id, snapshot) when a room changes without a local event (a node died)."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def changed(self, consult_id: int, snap: Snapshot) -> None:
        """Tell the listeners (in an app context: they emit) that a room changed behind our back."""
        for listener in self._listeners:
            try:
                if self._app is not None:
                    with self._app.app_context():
                        listener(consult_id, snap)
                else:
                    listener(consult_id, snap)
            except Exception:
                log.exception("presence listener failed for consult %s", consult_id)


def connections(namespace: str, app: Flask | None = None) -> Connections:
    """This app's connection table for a namespace (shared across nodes through Redis if configured)."""
    app = app or current_app._get_current_object()
    tables = app.extensions.setdefault(CONNECTIONS_KEY, {})
    table = tables.get(namespace)
    if table is None:
        with _tables_lock:
            table = tables.get(namespace)
            if table is None:
                table = tables[namespace] = Connections(namespace, shared_presence(app), app)
    return table


def joined_connections(app: Flask) -> dict[str, list[str]]:
    """This process's connections that have joined a consult's room, by namespace."""
    tables = app.extensions.get(CONNECTIONS_KEY, {})
    return {ns: sids for ns, table in tables.items() if (sids := table.sids())}


def shared_presence(app: Flask) -> SharedPresence | None:
    """The app's shared presence store: Redis when REDIS_URL is set, else None (in-process only)."""
    url = app.config.get("REDIS_URL") or ""
    if not url:
        return None
    with _tables_lock:
        store = app.extensions.get(PRESENCE_KEY)
        if store is None:
            store = app.extensions[PRESENCE_KEY] = SharedPresence(url, int(app.config["PRESENCE_TTL_SECONDS"]))
        return store


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


def server_error_ack() -> dict[str, Any]:
    """The acknowledgement of an event whose handler failed (logged by the caller); the client retries."""
    return {"ok": False, "error": "server_error", "message": _("Something went wrong; try again."), "status": 500}


def error_ack(exc: DomainError) -> dict[str, Any]:
    """A Socket.IO error acknowledgement for a domain error."""
    ack = {"ok": False, "error": exc.code, "message": exc.message, "status": exc.status}
    if getattr(exc, "retry_after", None) is not None:  # rate_limited: when to try again, in seconds
        ack["retry_after"] = exc.retry_after  # type: ignore[attr-defined]
    return ack


# Events a person makes (typing, chatting, editing, a video call's periodic stats): they keep the
# session alive. Events a browser sends by itself (read receipts, backfill, notes sync) do not, so
# an unattended screen still reaches the idle timeout.
ACTIVE_EVENTS = frozenset({"join", "send", "typing", "update", "focus", "signal", "state", "stats", "leave"})


def require_user() -> None:
    """Load the session's user afresh; a signed-out, idle or suspended session is refused."""
    g.pop("_login_user", None)
    if not current_user.is_authenticated:
        raise ValidationFailed("Your session has ended; sign in again.")
    event = getattr(request, "event", None)
    if isinstance(event, dict) and event.get("message") in ACTIVE_EVENTS and "huizhen_session" in g:
        from .auth.sessions import touch

        touch(g.huizhen_session)


def accept_connection(namespace: str) -> None:
    """Refuse a connection without a live session (authenticate_connection); track it so that
    ending the session ends it."""
    authenticate_connection()
    from .auth.sessions import hash_key
    from .sessionbus import bus

    bus().track(namespace, request.sid, current_user.id, hash_key(current_user.session_key or ""))


def forget_connection(namespace: str) -> None:
    """A connection is gone: stop tracking it."""
    from .sessionbus import bus

    bus().untrack(namespace, request.sid)


def _user_key(authenticated: bool) -> str:
    """Who sends, for the per-user event limits (a handler that proves the session itself has not
    loaded the user: its login token, hashed, stands for the user)."""
    if authenticated:
        return str(current_user.id)
    return ratelimit.hashed(str(session.get("_user_id") or request.sid))


def handler(fn: Callable | None = None, *, remove_session: bool = False, authenticate: bool = True,
            counted: bool = False) -> Callable:
    """Validate the payload, run the handler, and turn every failure into an error ack.

    The user is loaded afresh for every event (a suspended or signed-out account is refused at
    once). A handler with authenticate=False makes that check itself (the chat send path proves
    the session in the same SQL statement that stores the message, and calls require_user() on
    any other path). remove_session ends the database session after the event (the notes
    namespace keeps no ORM state between events).

    Each event kind is rate-limited per connection (before any database work) and per user
    (ratelimit.check_event): over the limit the ack is rate_limited and nothing is relayed.
    counted: the event was already counted against those limits (the chat's lean send path,
    rooms/events.py, hands over what it could not finish).
    """
    if fn is None:
        return lambda f: handler(f, remove_session=remove_session, authenticate=authenticate, counted=counted)

    event = fn.__name__.removeprefix("on_")

    @wraps(fn)
    def wrapped(self, data: Any = None, *extra: Any, **context: Any) -> dict[str, Any]:
        try:
            if not counted:
                ratelimit.check_event(self.namespace, event, sid=request.sid)  # before any database work
            if authenticate:
                require_user()
            if not counted:
                ratelimit.check_event(self.namespace, event, user=_user_key(authenticate))
            if extra or not isinstance(data, dict):  # extra arguments would be a TypeError, no ack
                raise ValidationFailed("The payload must be a JSON object.")
            check_payload(data)  # no NUL, lone surrogate, non-finite or oversized number anywhere
            if len(json.dumps(data, default=str)) > current_app.config["SOCKET_MAX_PAYLOAD_BYTES"]:
                raise ValidationFailed("The payload is too large.")
            return fn(self, data, **context)  # context: keywords from our own code, never from a client
        except DomainError as exc:
            db.session.rollback()
            return error_ack(exc)
        except Exception:
            db.session.rollback()
            log.exception("socket event %s failed", fn.__name__)
            return server_error_ack()
        finally:
            if remove_session:
                db.session.remove()

    return wrapped
