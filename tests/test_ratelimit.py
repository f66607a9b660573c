"""The socket event limiter and the refusal counters (webapp/ratelimit.py), in memory and on Redis."""

from __future__ import annotations

import os
import time

import pytest
import redis

from config import _env_rate_limits
from tests.conftest import require
from webapp import ratelimit

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["memory", "redis"])
def storage(request, app, monkeypatch) -> str:
    """The limiter on this app's storage: in-process, or Redis (a database of this test's own)."""
    if request.param == "redis":
        require(_redis_up(), f"Redis is not reachable at {REDIS_URL}")
        redis.Redis.from_url(REDIS_URL).flushdb()
        monkeypatch.setitem(app.config, "RATELIMIT_STORAGE_URI", REDIS_URL)
    ratelimit.reset(app)
    yield request.param
    ratelimit.reset(app)
    if request.param == "redis":
        redis.Redis.from_url(REDIS_URL).flushdb()


def test_events_are_limited_per_connection_then_per_user(app, storage, monkeypatch):
    monkeypatch.setitem(app.config, "SOCKET_RATE_LIMITS", {"/call signal": "3 per minute"})
    monkeypatch.setitem(app.config, "SOCKET_RATE_USER_FACTOR", 2)
    for _ in range(3):
        ratelimit.check_event("/call", "signal", sid="sid-1")
    with pytest.raises(ratelimit.RateLimited) as refused:
        ratelimit.check_event("/call", "signal", sid="sid-1")
    assert refused.value.status == 429 and refused.value.code == "rate_limited"
    assert 0 < refused.value.retry_after <= 60
    ratelimit.check_event("/call", "signal", sid="sid-2")  # another connection has its own window
    ratelimit.check_event("/call", "state", sid="sid-1")  # another event kind too (the default limit)
    for _ in range(6):  # the user: 3 x 2 over all connections
        ratelimit.check_event("/call", "signal", user="7")
    with pytest.raises(ratelimit.RateLimited):
        ratelimit.check_event("/call", "signal", user="7")
    ratelimit.check_event("/call", "signal", user="8")


def test_an_event_kind_can_be_left_unlimited(app, storage, monkeypatch):
    monkeypatch.setitem(app.config, "SOCKET_RATE_LIMITS", {"/room send": "off"})
    monkeypatch.setitem(app.config, "SOCKET_RATE_LIMIT_DEFAULT", "1 per minute")
    for _ in range(50):
        ratelimit.check_event("/room", "send", sid="sid-1")
    ratelimit.check_event("/room", "typing", sid="sid-1")
    with pytest.raises(ratelimit.RateLimited):
        ratelimit.check_event("/room", "typing", sid="sid-1")


def test_refusals_are_counted_per_window_with_the_previous_total(app, storage):
    window = 2
    while time.time() % window > window * 0.5:  # start early in a window, so the first three share it
        time.sleep(0.05)
    assert [ratelimit.count_refusal("room.access_denied/3/1", window)[0] for _ in range(3)] == [1, 2, 3]
    assert ratelimit.count_refusal("room.access_denied/4/1", window) == (1, 0)  # another user: its own count
    time.sleep(window - time.time() % window + 0.05)  # the next window
    assert ratelimit.count_refusal("room.access_denied/3/1", window) == (1, 3)


def test_the_limiter_being_down_lets_events_through(app, monkeypatch):
    class Broken:
        def hit(self, *args, **kwargs):
            raise ConnectionError("redis is down")

    ratelimit.reset(app)
    monkeypatch.setattr(ratelimit.state(), "limiter", Broken())
    monkeypatch.setitem(app.config, "SOCKET_RATE_LIMITS", {"/call signal": "1 per minute"})
    for _ in range(3):
        ratelimit.check_event("/call", "signal", sid="sid-1")


def test_limits_are_configured_from_the_environment(monkeypatch):
    monkeypatch.setenv("SOCKET_RATE_LIMITS", "/call  signal = 5 per second; /room typing=off")
    limits = _env_rate_limits("SOCKET_RATE_LIMITS")
    assert limits["/call signal"] == "5 per second" and limits["/room typing"] == "off"
    assert limits["/notes focus"]  # the defaults stay for the rest
    monkeypatch.setenv("SOCKET_RATE_LIMITS", "/call signal=five a second")
    with pytest.raises(ValueError):
        _env_rate_limits("SOCKET_RATE_LIMITS")
    monkeypatch.setenv("SOCKET_RATE_LIMITS", "signal=5 per second")
    with pytest.raises(RuntimeError):
        _env_rate_limits("SOCKET_RATE_LIMITS")
