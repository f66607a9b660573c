"""The rooms domain's per-app state: the chat limiter, session-activity times, the resync gate and
the compiled fast-path statements, kept in ``app.extensions`` (a new app starts afresh)."""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Flask, current_app
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from ..ratelimit import LocalMovingWindow

STATE_KEY = "huizhen.rooms"


class IntervalGate:
    """At most one pass per key in any `gap` seconds, in this process (keys forgotten once idle)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def allow(self, key: str, gap: float) -> bool:
        """Whether the key may pass now (and if so, remember that it did)."""
        now = time.monotonic()
        with self._lock:
            if len(self._last) > 10_000:  # drop connections that stopped asking (closed ones)
                self._last = {k: t for k, t in self._last.items() if now - t < 60}
            if now - self._last.get(key, -gap) < gap:
                return False
            self._last[key] = now
            return True

    def clear(self) -> None:
        """Forget every key."""
        with self._lock:
            self._last.clear()


class ActivityClock:
    """When each session's activity was last written by this process (the send path writes it
    about once a minute, not once per message)."""

    LIMIT = 100_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._touched: dict[str, float] = {}

    def due(self, key_hash: str, every: float) -> bool:
        """Whether this session's activity should be written now; if so, it counts as written."""
        now = time.monotonic()
        with self._lock:
            if now - self._touched.get(key_hash, -1e9) < every:
                return False
            if len(self._touched) > self.LIMIT:
                self._touched.clear()
            self._touched[key_hash] = now
            return True


class RoomState:
    """One app's room state; the limiter is rebuilt when RATELIMIT_STORAGE_URI changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limiter: tuple[str, MovingWindowRateLimiter | LocalMovingWindow] | None = None
        self.activity = ActivityClock()
        self.head_gate = IntervalGate()
        # compiled SQL of the hot paths, by (name, dialect); pure functions of the schema
        self.statements: dict[tuple[str, str], Any] = {}

    def limiter(self, uri: str) -> MovingWindowRateLimiter | LocalMovingWindow:
        """The chat's moving-window limiter on this storage (in-process for memory://)."""
        current = self._limiter
        if current is None or current[0] != uri:
            with self._lock:
                current = self._limiter
                if current is None or current[0] != uri:
                    built = (LocalMovingWindow() if uri.startswith("memory://")
                             else MovingWindowRateLimiter(storage_from_string(uri)))
                    current = self._limiter = (uri, built)
        return current[1]

    def statement(self, name: str, dialect: str, build: Any) -> Any:
        """The statement `name` for this dialect, built once by build(dialect)."""
        key = (name, dialect)
        found = self.statements.get(key)
        if found is None:
            found = self.statements[key] = build(dialect)
        return found


def room_state(app: Flask | None = None) -> RoomState:
    """This app's room state (created on first use)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get(STATE_KEY)
    if found is None:
        found = app.extensions.setdefault(STATE_KEY, RoomState())
    return found


def reset(app: Flask) -> None:
    """Forget this app's room state (tests: ids are reused between tests)."""
    app.extensions.pop(STATE_KEY, None)
