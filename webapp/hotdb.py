"""A second engine for the chat's hot path on PostgreSQL: autocommit, one round trip per statement.

The app's engine checks every connection it lends out (pool_pre_ping: a `SELECT 1` first) and
wraps each use in BEGIN … COMMIT, so the chat's one-statement send cost four round trips. This
engine lends connections in autocommit, without the ping: a statement that is one transaction by
itself (the send's data-modifying CTE, a guarded read) takes one round trip. A connection that
died while idle in the pool (PostgreSQL restarted, a network cut) is found by the statement
itself; run() then retries once on a fresh connection, which is what the ping would have done,
only after the fact instead of before every use. On SQLite the app's engine is used as is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from flask import Flask, current_app
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .extensions import db

log = logging.getLogger(__name__)
HOT_ENGINE_KEY = "huizhen.hot_engine"
_lock = threading.Lock()
T = TypeVar("T")


def hot_engine(app: Flask | None = None) -> Engine | None:
    """This app's autocommit engine without pre-ping (PostgreSQL only; None on SQLite)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get(HOT_ENGINE_KEY)
    if found is not None:
        return found or None
    with _lock:
        found = app.extensions.get(HOT_ENGINE_KEY)
        if found is None:
            found = app.extensions[HOT_ENGINE_KEY] = _build(app) or False
    return found or None


def _build(app: Flask) -> Engine | None:
    with app.app_context():
        base = db.engine
    if base.dialect.name != "postgresql":
        return None
    options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    options.pop("pool_pre_ping", None)  # found by the statement instead: run() retries once
    options["pool_size"] = int(app.config["CHAT_HOT_POOL_SIZE"])
    options["max_overflow"] = int(app.config["CHAT_HOT_POOL_OVERFLOW"])
    return create_engine(base.url, isolation_level="AUTOCOMMIT", **options)


def dispose(app: Flask) -> None:
    """Close the hot engine's connections (tests, and an app being torn down)."""
    found = app.extensions.pop(HOT_ENGINE_KEY, None)
    if found:
        found.dispose()


def run(engine: Engine, work: Callable[[Connection], T]) -> tuple[T, bool]:
    """work(connection) on a pooled autocommit connection; once more on a fresh one if that one was dead.

    Returns work's result and whether it was run a second time. Only a connection found dead
    (connection_invalidated) is retried; any other database error is raised. A statement cut
    off with its connection may or may not have committed: the caller's work must be safe to
    run twice (the send's insert skips a client id already stored) and the caller, told it was
    retried, must treat "already stored" as possibly its own first attempt. If the second run fails
    too, its exception carries hot_retried = True for the same reason.
    """
    try:
        with engine.connect() as conn:
            return work(conn), False
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.warning("a pooled database connection was dead (%s); retrying once on a fresh one",
                    exc.orig.__class__.__name__ if exc.orig is not None else "closed")
    try:
        with engine.connect() as conn:
            return work(conn), True
    except SQLAlchemyError as exc:  # the caller must still know a first attempt may have committed
        exc.hot_retried = True  # type: ignore[attr-defined]
        raise


def read(work: Callable[[Connection], T]) -> T:
    """work(connection) for a read of one statement: on PostgreSQL on the hot engine (one round trip,
    retried once on a dead connection), elsewhere on a short connection of the app's engine (closed at
    once: a read left open in the session would block SQLite's write lock for the next send)."""
    engine = hot_engine()
    if engine is not None:
        return run(engine, work)[0]
    with db.engine.connect() as conn:
        return work(conn)

