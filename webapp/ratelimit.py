"""Rate limits for Socket.IO events and counters for repeated refusals, kept per app.

The same machinery as the chat's own limit (rooms.services): the `limits` library's moving
window on RATELIMIT_STORAGE_URI (Redis when REDIS_URL is set, so the limits hold across
processes), or a lighter in-process moving window for memory://. Each app keeps its own limiter
and counters in ``app.extensions`` (a new app, e.g. a test's or a restarted server's, starts
afresh).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from typing import Any

from flask import Flask, current_app
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from .errors import DomainError

STATE_KEY = "huizhen.ratelimit"

class RateLimited(DomainError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, **params: Any) -> None:
        super().__init__(message, **params)
        self.retry_after = retry_after


class LocalMovingWindow:
    """The moving-window limit of one process, for RATELIMIT_STORAGE_URI=memory://.

    Same rule as limits' MovingWindowRateLimiter (at most `amount` hits per key in any window of
    `expiry` seconds), without limits' MemoryStorage, which restarts a 10 ms timer after hits and
    walks every key (making a lock per key) each time: with 1,000 users chatting that walk was the
    largest single cost of a chat message (measured with bench/chat_bench.py and py-spy).
    """

    SWEEP_SECONDS = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: dict[str, deque[float]] = {}
        self._longest = 0.0  # the longest window seen: a key idle for longer can be forgotten
        self._swept = time.monotonic()

    def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        key, now = item.key_for(*identifiers), time.monotonic()
        with self._lock:
            self._longest = max(self._longest, item.get_expiry())
            if now - self._swept > self.SWEEP_SECONDS:  # keys of closed connections do not pile up
                self._hits = {k: h for k, h in self._hits.items() if h and h[-1] > now - self._longest}
                self._swept = now
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - item.get_expiry():
                hits.popleft()
            if len(hits) + cost > item.amount:
                return False
            hits.extend([now] * cost)
            return True

    def retry_after(self, item: RateLimitItem, *identifiers: str) -> float:
        """Seconds until the oldest hit leaves the window."""
        with self._lock:
            hits = self._hits.get(item.key_for(*identifiers))
            return max(0.0, hits[0] + item.get_expiry() - time.monotonic()) if hits else 0.0


class LocalCounters:
    """Expiring counters of one process (memory://), with the two calls used from limits' storage."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.monotonic()
        with self._lock:
            if len(self._counts) > 10_000:  # forget expired counters now and then
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
            count, until = self._counts.get(key, (0, 0.0))
            if until <= now:
                count, until = 0, now + expiry
            self._counts[key] = (count + amount, until)
            return count + amount

    def get(self, key: str) -> int:
        with self._lock:
            count, until = self._counts.get(key, (0, 0.0))
            return count if until > time.monotonic() else 0


class _State:
    """One app's limiter and counters on its storage."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        if uri.startswith("memory://"):
            self.limiter: MovingWindowRateLimiter | LocalMovingWindow = LocalMovingWindow()
            self.counters: Any = LocalCounters()
        else:
            storage = storage_from_string(uri)
            self.limiter = MovingWindowRateLimiter(storage)
            self.counters = storage
        self.items: dict[tuple[str, int], RateLimitItem | None] = {}


def state(app: Flask | None = None) -> _State:
    """This app's rate-limit state (rebuilt if its storage URI changed)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    uri = app.config["RATELIMIT_STORAGE_URI"]
    current = app.extensions.get(STATE_KEY)
    if current is None or current.uri != uri:
        current = app.extensions[STATE_KEY] = _State(uri)
    return current


def reset(app: Flask) -> None:
    """Forget every window and counter of this app (tests; a fresh app starts empty anyway)."""
    app.extensions.pop(STATE_KEY, None)


def event_limit(namespace: str, event: str, factor: int = 1) -> RateLimitItem | None:
    """The configured limit of one event kind (times factor), or None when it is off."""
    st = state()
    cache_key = (f"{namespace} {event}", factor)
    if cache_key not in st.items:
        limits = current_app.config["SOCKET_RATE_LIMITS"]
        text = limits.get(f"{namespace} {event}", current_app.config["SOCKET_RATE_LIMIT_DEFAULT"]).strip()
        if text.lower() in {"off", "none", ""}:
            st.items[cache_key] = None
        else:
            item = parse(text)
            st.items[cache_key] = type(item)(item.amount * factor, item.multiples, namespace="socket")
    return st.items[cache_key]


def _retry_after(st: _State, item: RateLimitItem, *identifiers: str) -> float | None:
    try:
        if isinstance(st.limiter, LocalMovingWindow):
            return round(st.limiter.retry_after(item, *identifiers), 2)
        return round(max(0.0, st.limiter.get_window_stats(item, *identifiers).reset_time - time.time()), 2)
    except Exception:
        return None


def check_event(namespace: str, event: str, *, sid: str | None = None, user: Any = None) -> None:
    """Count one event of a connection (sid) or of a user; raise RateLimited over the limit.

    If the limiter's storage is down the event is let through (and logged): refusing every
    doctor's events because Redis is unreachable would be worse than an unthrottled flood.
    """
    if sid is not None:
        kind, factor, ident = "sid", 1, sid
    else:
        kind, factor, ident = "user", int(current_app.config["SOCKET_RATE_USER_FACTOR"]), str(user)
    item = event_limit(namespace, event, factor)
    if item is None:
        return
    st = state()
    try:
        allowed = st.limiter.hit(item, namespace, event, kind, ident)
    except Exception:
        current_app.logger.warning("socket rate limiter unavailable; allowing %s %s", namespace, event)
        return
    if not allowed:
        raise RateLimited("Too many '%(event)s' events; slow down and try again in a moment.", event=event,
                          retry_after=_retry_after(st, item, namespace, event, kind, ident))


def hashed(secret: str) -> str:
    """A short, non-reversible key for an identifier that must not be stored as is (a login token)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:20]


def count_refusal(key: str, window: int) -> tuple[int, int]:
    """Count one refusal in the current fixed window of `window` seconds.

    Returns (count in this window so far, count of the previous window). Raises if the storage is
    down (the caller then audits the refusal on its own).
    """
    counters = state().counters
    bucket = int(time.time() // window)
    count = counters.incr(f"refusal/{key}/{bucket}", window * 2)
    previous = counters.get(f"refusal/{key}/{bucket - 1}") if count == 1 else 0
    return count, previous
