"""GET /healthz, the probe a load balancer uses: database and Redis checked, fast, open, not audited."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from config import TestingConfig
from tests.conftest import free_port, require
from webapp import create_app
from webapp.extensions import db
from webapp.models import AuditEvent

BOUND_SECONDS = 10  # generous: each check gives up after HEALTH_TIMEOUT_SECONDS (1 s here, 2 s for libpq)


def probe_app(tmp_path: Path, database_url: str | None = None, redis_url: str = "") -> Flask:
    """An app whose only job is to be probed (no schema needed for SELECT 1)."""
    return create_app(TestingConfig, {
        "SQLALCHEMY_DATABASE_URI": database_url or f"sqlite:///{tmp_path / 'probe.db'}",
        "REDIS_URL": redis_url,
        "HEALTH_TIMEOUT_SECONDS": 1.0,
        "UPLOAD_DIR": str(tmp_path / "uploads"),
    })


def get_health(app: Flask) -> tuple[int, dict, float]:
    started = time.monotonic()
    response = app.test_client().get("/healthz")
    return response.status_code, response.get_json(), time.monotonic() - started


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts TCP connections (the kernel's backlog) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def test_healthz_is_200_without_sign_in_session_or_audit_entry(client, app):
    response = client.get("/healthz")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["status"] == "ok" and body["checks"]["database"] == "ok"
    assert "Set-Cookie" not in response.headers  # no session is opened for a probe
    assert response.headers["Cache-Control"] == "no-store"
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == 0


def test_healthz_says_redis_is_not_configured_when_there_is_none(tmp_path):
    status, body, _ = get_health(probe_app(tmp_path))
    assert (status, body) == (200, {"status": "ok", "checks": {"database": "ok", "redis": "not configured"}})


def test_healthz_is_503_naming_the_database_when_it_refuses_connections(tmp_path):
    closed = free_port()  # nothing listens there
    status, body, elapsed = get_health(probe_app(tmp_path, f"postgresql+psycopg://postgres@127.0.0.1:{closed}/x"))
    assert status == 503
    assert body == {"status": "fail", "checks": {"database": "fail", "redis": "not configured"}}
    assert elapsed < BOUND_SECONDS


def test_healthz_gives_up_on_a_database_that_never_answers(tmp_path, silent_server):
    url = f"postgresql+psycopg://postgres@127.0.0.1:{silent_server}/x"
    status, body, elapsed = get_health(probe_app(tmp_path, url))
    assert status == 503 and body["checks"]["database"] == "fail"
    assert elapsed < BOUND_SECONDS, f"the probe took {elapsed:.1f} s"


def test_healthz_is_503_naming_redis_when_it_refuses_connections(tmp_path):
    closed = free_port()
    status, body, elapsed = get_health(probe_app(tmp_path, redis_url=f"redis://127.0.0.1:{closed}/0"))
    assert (status, body) == (503, {"status": "fail", "checks": {"database": "ok", "redis": "fail"}})
    assert elapsed < BOUND_SECONDS
    assert str(closed) not in str(body)  # no address or error text is given away


def test_healthz_gives_up_on_a_redis_that_never_answers(tmp_path, silent_server):
    status, body, elapsed = get_health(probe_app(tmp_path, redis_url=f"redis://127.0.0.1:{silent_server}/0"))
    assert status == 503 and body["checks"]["redis"] == "fail"
    assert elapsed < BOUND_SECONDS, f"the probe took {elapsed:.1f} s"


def test_healthz_pings_a_running_redis_and_notices_it_stop_and_return(tmp_path):
    require(shutil.which("redis-server") is not None, "redis-server is not installed (apt-get install redis-server)")
    from tests.cluster import Redis

    server = Redis(tmp_path / "redis", free_port())
    server.start()
    try:
        app = probe_app(tmp_path, redis_url=server.url)
        assert get_health(app)[:2] == (200, {"status": "ok", "checks": {"database": "ok", "redis": "ok"}})
        server.stop()
        status, body, _ = get_health(app)
        assert status == 503 and body["checks"]["redis"] == "fail"
        server.start()
        assert get_health(app)[:2] == (200, {"status": "ok", "checks": {"database": "ok", "redis": "ok"}})
    finally:
        server.stop()
