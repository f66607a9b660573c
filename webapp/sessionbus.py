"""Ending sockets on every node: when a session ends or a consult changes, connections go at once.

Every Socket.IO connection is tracked in its process with the user and the server-side session
(key hash) it was opened with. Three things end connections:

- ``end_user_sockets(user_id)`` (sign-out, suspension, password change or reset) and
  ``end_session_sockets(key_hash)`` (one session ended, e.g. by the idle timeout) disconnect the
  matching connections of this process at once, and publish the same order on the Redis channel
  ``huizhen:sessions`` (when ``REDIS_URL`` is set) so that every other process does the same;
- ``recheck_consult(consult_id)`` (a consult cancelled, signed off or reassigned) makes every
  process re-check, for each connection joined to that consult, that its user may still be
  there, and disconnect the others;
- a sweeper in each process re-checks every local connection every ``SESSION_SWEEP_SECONDS``
  (its session, and its joined consult): an idle-expired session is disconnected even though
  nobody acted, and an order whose Redis message was lost (Redis down) is still carried out on
  the other nodes.

python-socketio's pub/sub manager propagates ``disconnect(sid)``, ``close_room`` and room changes
for one *sid* across processes, but it has no "disconnect every connection of user X" and knows
nothing of sessions: hence this channel of our own. A Redis failure is logged and never raised
(sign-out must not fail); the per-event checks still refuse, and the sweeper catches up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from flask import Flask, current_app
from sqlalchemy import select
from sqlalchemy.orm import selectinload

log = logging.getLogger(__name__)
SWEEP_CONSULTS_PER_STEP = 50
BUS_KEY = "huizhen.sessionbus"
CHANNEL = "huizhen:sessions"


class Tracked(NamedTuple):
    """One live connection: its namespace, sid, user and session."""

    namespace: str
    sid: str
    user_id: int
    key_hash: str


class NamespaceRules(NamedTuple):
    """How to tell which consult a connection joined, and whether its user may still be there."""

    joined: Callable[[Flask, str], int | None]
    entitled: Callable[[Any, Any], bool]


_rules: dict[str, NamespaceRules] = {}


def register_namespace(namespace: str, joined: Callable[[Flask, str], int | None],
                       entitled: Callable[[Any, Any], bool]) -> None:
    """Say how connections of a namespace are checked when their consult changes."""
    _rules[namespace] = NamespaceRules(joined, entitled)


class Bus:
    """This app's (this process's) live connections and its Redis listener and sweeper."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._conns: dict[tuple[str, str], Tracked] = {}
        self._started = False
        self._redis: Any = None
        self.stopped = threading.Event()

    # --- the table of live connections ---------------------------------------------------------

    def track(self, namespace: str, sid: str, user_id: int, key_hash: str) -> None:
        with self._lock:
            self._conns[(namespace, sid)] = Tracked(namespace, sid, user_id, key_hash)
            start = not self._started
            self._started = True
        if start:
            self._start_tasks()

    def untrack(self, namespace: str, sid: str) -> None:
        with self._lock:
            self._conns.pop((namespace, sid), None)

    def matching(self, predicate: Callable[[Tracked], bool]) -> list[Tracked]:
        with self._lock:
            return [t for t in self._conns.values() if predicate(t)]

    # --- acting locally ------------------------------------------------------------------------

    def _disconnect(self, conns: list[Tracked]) -> None:
        from .realtime import SERVER_KEY

        server = self.app.extensions[SERVER_KEY]
        for conn in conns:
            self.untrack(conn.namespace, conn.sid)
            try:
                server.disconnect(conn.sid, namespace=conn.namespace, ignore_queue=True)
            except Exception:
                log.exception("could not disconnect %s on %s", conn.sid, conn.namespace)

    def apply(self, order: dict[str, Any]) -> None:
        """Carry out one order (from this process or from the Redis channel) on local connections."""
        if "user_id" in order:
            uid = order["user_id"]
            self._disconnect(self.matching(lambda t: t.user_id == uid))
        elif "session" in order:
            key = order["session"]
            self._disconnect(self.matching(lambda t: t.key_hash == key))
        elif "consult_id" in order:  # database reads: off the caller's request and transaction
            from .realtime import SERVER_KEY

            self.app.extensions[SERVER_KEY].start_background_task(self._recheck_logged, int(order["consult_id"]))

    def _recheck_logged(self, consult_id: int) -> None:
        try:
            self._recheck(consult_id)
        except Exception:
            log.exception("could not re-check the connections of consult %s; the per-event checks "
                          "still refuse, and the next sweep re-checks them", consult_id)

    def _not_entitled(self, conns: list[Tracked], consult_id: int | None = None) -> list[Tracked]:
        """The joined connections (to consult_id, or to any consult) whose user may no longer be there.

        Checked SWEEP_CONSULTS_PER_STEP consults at a time, yielding in between: loading every joined
        consult of a busy process at once (500 consults, their participants and 1,000 users) held
        the gevent loop ~85 ms, and every chat message arriving then waited for it.
        """
        joined = []
        for conn in conns:
            if conn.namespace in _rules:
                cid = _rules[conn.namespace].joined(self.app, conn.sid)
                if cid is not None and (consult_id is None or cid == consult_id):
                    joined.append((conn, cid))
        if not joined:
            return []
        by_consult: dict[int, list[Tracked]] = {}
        for conn, cid in joined:
            by_consult.setdefault(cid, []).append(conn)
        ids = sorted(by_consult)
        refused: list[Tracked] = []
        for start in range(0, len(ids), SWEEP_CONSULTS_PER_STEP):
            if start:  # a step at a time: the event loop serves chat messages in between
                self._sleep(0)
            step = {cid: by_consult[cid] for cid in ids[start:start + SWEEP_CONSULTS_PER_STEP]}
            refused += self._not_entitled_step(step)
        return refused

    def _not_entitled_step(self, by_consult: dict[int, list[Tracked]]) -> list[Tracked]:
        from .extensions import db
        from .models import Consult, User

        with self.app.app_context():
            try:
                consults = {c.id: c for c in db.session.scalars(  # participants in one more query, not one per consult
                    select(Consult).where(Consult.id.in_(list(by_consult)))
                    .options(selectinload(Consult.participants)))}
                users = {u.id: u for u in db.session.scalars(
                    select(User).where(User.id.in_(sorted({c.user_id for conns in by_consult.values()
                                                           for c in conns}))))}
                return [conn for cid, conns in by_consult.items() for conn in conns
                        if cid not in consults or conn.user_id not in users
                        or not _rules[conn.namespace].entitled(users[conn.user_id], consults[cid])]
            finally:
                db.session.remove()

    def _recheck(self, consult_id: int) -> None:
        self._disconnect(self._not_entitled(self.matching(lambda t: True), consult_id))

    def sweep(self) -> None:
        """Disconnect local connections whose session ended or went idle, or whose consult they lost."""
        from .auth import sessions
        from .extensions import db

        conns = self.matching(lambda t: True)
        if not conns:
            return
        with self.app.app_context():
            try:
                alive = sessions.live_key_hashes({t.key_hash for t in conns})
            finally:
                db.session.remove()
        self._disconnect([t for t in conns if t.key_hash not in alive])
        self._disconnect(self._not_entitled([t for t in conns if t.key_hash in alive]))

    # --- across processes ------------------------------------------------------------------------

    def _redis_client(self) -> Any:
        url = self.app.config.get("REDIS_URL")
        if not url:
            return None
        if self._redis is None or self._redis[0] != url:
            import redis

            self._redis = (url, redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2))
        return self._redis[1]

    def publish(self, order: dict[str, Any]) -> None:
        """Tell the other processes (a Redis failure is logged: the sweeper catches up)."""
        try:
            client = self._redis_client()
            if client is not None:
                client.publish(self.channel, json.dumps({**order, "origin": id(self)}))
        except Exception:
            log.exception("could not publish %s on Redis; other nodes will end those sockets "
                          "on their next sweep", order)

    @property
    def channel(self) -> str:
        return self.app.config.get("SESSION_CHANNEL") or CHANNEL

    def _start_tasks(self) -> None:
        from .realtime import SERVER_KEY

        server = self.app.extensions[SERVER_KEY]
        server.start_background_task(self._sweeper)
        if self.app.config.get("REDIS_URL"):
            server.start_background_task(self._listener)

    def _sweeper(self) -> None:
        last = time.monotonic()
        while not self.stopped.is_set():
            self._sleep(0.5)  # short steps: a changed SESSION_SWEEP_SECONDS applies at once
            if time.monotonic() - last < float(self.app.config["SESSION_SWEEP_SECONDS"]):
                continue
            last = time.monotonic()
            try:
                self.sweep()
            except Exception:
                log.exception("session sweep failed; retrying")

    def _sleep(self, seconds: float) -> None:
        from .realtime import SERVER_KEY

        self.app.extensions[SERVER_KEY].sleep(seconds)

    def _listener(self) -> None:
        backoff = 1.0
        while not self.stopped.is_set():
            pubsub = None
            try:
                pubsub = self._redis_client().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                backoff = 1.0
                while not self.stopped.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        self._sleep(0)  # let other greenlets run under gevent
                        continue
                    order = json.loads(message["data"])
                    if order.pop("origin", None) != id(self):  # this process applied it already
                        self.apply(order)
            except Exception:
                log.exception("session channel listener failed; reconnecting in %.0f s", backoff)
                self._sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()


def bus(app: Flask | None = None) -> Bus:
    """The session bus of this app (one per app, i.e. per process)."""
    app = app or current_app._get_current_object()
    existing = app.extensions.get(BUS_KEY)
    if existing is None:
        existing = app.extensions[BUS_KEY] = Bus(app)
    return existing


def _order(order: dict[str, Any]) -> None:
    b = bus()
    b.apply(order)
    b.publish(order)


def end_user_sockets(user_id: int) -> None:
    """Disconnect every connection of a user, in this process and (through Redis) everywhere."""
    _order({"user_id": user_id})


def end_session_sockets(key_hash: str) -> None:
    """Disconnect the connections opened with one session, everywhere."""
    _order({"session": key_hash})


def recheck_consult(consult_id: int) -> None:
    """Disconnect, everywhere, connections joined to a consult whose user may no longer be there."""
    _order({"consult_id": consult_id})

