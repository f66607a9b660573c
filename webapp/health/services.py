"""Health checks: is this node able to serve (database answers, Redis answers if configured)?

Each check has its own small connection (an engine of one connection, a Redis client) with short
timeouts, so a probe answers within about HEALTH_TIMEOUT_SECONDS even when the application's own
pool is exhausted or a server is unreachable. Failures are logged here; the answer names only the
part that failed, never an address or an error text.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import redis
from flask import Flask, current_app
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)
_EXTENSION_KEY = "huizhen.health"
_lock = threading.Lock()


def _probes(app: Flask) -> dict[str, Any]:
    """This app's probe connections, built on first use (after gunicorn has forked)."""
    with _lock:
        probes = app.extensions.get(_EXTENSION_KEY)
        if probes is None:
            probes = {"engine": _probe_engine(app), "redis": _probe_redis(app)}
            app.extensions[_EXTENSION_KEY] = probes
        return probes


def _probe_engine(app: Flask) -> Engine:
    url: str = app.config["SQLALCHEMY_DATABASE_URI"]
    timeout = float(app.config["HEALTH_TIMEOUT_SECONDS"])
    if url.startswith("postgresql"):
        return create_engine(
            url, pool_size=1, max_overflow=0, pool_timeout=timeout, pool_pre_ping=True,
            connect_args={
                "connect_timeout": max(2, math.ceil(timeout)),  # libpq's smallest useful value
                "options": f"-c statement_timeout={int(timeout * 1000)}",
            },
        )
    return create_engine(url, pool_pre_ping=True, connect_args={"timeout": timeout} if url.startswith("sqlite") else {})


def _probe_redis(app: Flask) -> redis.Redis | None:
    url: str = app.config.get("REDIS_URL") or ""
    if not url:
        return None
    timeout = float(app.config["HEALTH_TIMEOUT_SECONDS"])
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, retry_on_timeout=False)


def check_database(engine: Engine) -> bool:
    """Whether the database answers SELECT 1."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        log.warning("health: the database does not answer", exc_info=True)
        return False


def check_redis(client: redis.Redis) -> bool:
    """Whether Redis answers PING."""
    try:
        return bool(client.ping())
    except Exception:
        log.warning("health: Redis does not answer", exc_info=True)
        return False


def health() -> tuple[bool, dict[str, str]]:
    """Check every part this node needs; (all fine, {part: "ok" | "fail" | "not configured"})."""
    probes = _probes(current_app._get_current_object())  # type: ignore[attr-defined]
    checks = {"database": "ok" if check_database(probes["engine"]) else "fail"}
    if probes["redis"] is None:
        checks["redis"] = "not configured"
    else:
        checks["redis"] = "ok" if check_redis(probes["redis"]) else "fail"
    return all(v != "fail" for v in checks.values()), checks
