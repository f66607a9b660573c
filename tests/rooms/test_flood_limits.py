"""Floods over real websockets: each event kind is limited per connection and per user, on every
namespace, and a flood of refusals leaves a bounded number of audit rows.

Huizhen on a loopback port (the live_server fixture), python-socketio clients logged in through
the real login form (real_client). Each test sets a limit per minute, so that the whole flood falls
in one window however slow the machine is, and counts exactly what the other party received.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from webapp import ratelimit
from webapp.extensions import db
from webapp.models import AuditEvent

TIMEOUT = 30
FLOOD = 1000
CANDIDATE = {"type": "candidate",
             "candidate": {"candidate": "candidate:1 1 udp 2122260223 10.0.0.2 50000 typ host", "sdpMid": "0",
                           "sdpMLineIndex": 0}}


class Inbox:
    """What one client is pushed, per event name."""

    def __init__(self, client: Any, namespace: str, *events: str) -> None:
        self.cond = threading.Condition()
        self.got: dict[str, list[Any]] = {name: [] for name in events}
        for name in events:
            client.on(name, self._recorder(name), namespace=namespace)

    def _recorder(self, name: str) -> Callable[[Any], None]:
        def record(data: Any) -> None:
            with self.cond:
                self.got[name].append(data)
                self.cond.notify_all()
        return record

    def count(self, name: str) -> int:
        with self.cond:
            return len(self.got[name])

    def wait_for(self, name: str, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.got[name]) >= n, timeout=TIMEOUT), \
                f"received {len(self.got[name])} {name} events, expected {n}"


def flood(client: Any, namespace: str, event: str, payload: dict[str, Any], n: int = FLOOD) -> list[dict[str, Any]]:
    """Send n events as fast as the client can, and collect every ack."""
    acks: list[dict[str, Any]] = []
    done = threading.Event()

    def on_ack(ack: dict[str, Any]) -> None:
        acks.append(ack)
        if len(acks) == n:
            done.set()

    for _ in range(n):
        client.emit(event, payload, namespace=namespace, callback=on_ack)
    assert done.wait(TIMEOUT * 4), f"only {len(acks)} of {n} acks came back"
    return acks


def settle() -> None:
    """Give anything still in flight the chance to arrive (every ack is in: the server is done)."""
    time.sleep(0.5)


@pytest.fixture
def limits(app, monkeypatch) -> Callable[..., None]:
    """Set event limits for this test (the app's limiter is rebuilt)."""

    def set_limits(per_event: dict[str, str]) -> None:
        configured = {**app.config["SOCKET_RATE_LIMITS"], **per_event}
        monkeypatch.setitem(app.config, "SOCKET_RATE_LIMITS", configured)
        ratelimit.reset(app)

    return set_limits


@pytest.fixture
def two_consults(make):
    rural, specialist = make.rural(), make.specialist()
    rural2, specialist2 = make.rural(), make.specialist()
    return ((rural, specialist, make.scheduled(rural, specialist)),
            (rural2, specialist2, make.scheduled(rural2, specialist2)))


def _rate_limited(ack: dict[str, Any]) -> bool:
    return ack["ok"] is False and ack["error"] == "rate_limited" and ack["status"] == 429 and ack["retry_after"] > 0


def test_a_flood_of_call_signals_is_cut_to_the_limit_and_other_calls_carry_on(real_client, two_consults, limits):
    limits({"/call signal": "50 per minute"})
    (rural, specialist, consult), (rural2, specialist2, consult2) = two_consults
    a, b = real_client(rural, namespace="/call"), real_client(specialist, namespace="/call")
    c, d = real_client(rural2, namespace="/call"), real_client(specialist2, namespace="/call")
    inbox_b, inbox_d = Inbox(b, "/call", "signal"), Inbox(d, "/call", "signal")
    for client, ref in ((a, consult.ref), (b, consult.ref), (c, consult2.ref), (d, consult2.ref)):
        assert client.call("join", {"ref": ref}, namespace="/call", timeout=TIMEOUT)["ok"]

    acks = flood(a, "/call", "signal", {"ref": consult.ref, **CANDIDATE})
    assert sum(ack["ok"] is True for ack in acks) == 50
    assert sum(_rate_limited(ack) for ack in acks) == FLOOD - 50
    inbox_b.wait_for("signal", 50)
    settle()
    assert inbox_b.count("signal") == 50  # nothing over the limit was relayed

    # the flooder's other events, and another consult's call, are unaffected
    assert a.call("state", {"ref": consult.ref, "muted": True}, namespace="/call", timeout=TIMEOUT)["ok"]
    assert c.call("signal", {"ref": consult2.ref, **CANDIDATE}, namespace="/call", timeout=TIMEOUT)["ok"]
    inbox_d.wait_for("signal", 1)


def test_the_limit_is_also_per_user_across_connections(real_client, two_consults, limits, app):
    limits({"/call signal": "10 per minute"})
    (rural, specialist, consult), _ = two_consults
    b = real_client(specialist, namespace="/call")
    inbox_b = Inbox(b, "/call", "signal")
    assert b.call("join", {"ref": consult.ref}, namespace="/call", timeout=TIMEOUT)["ok"]
    factor = app.config["SOCKET_RATE_USER_FACTOR"]
    connections = [real_client(rural, namespace="/call") for _ in range(factor + 1)]
    passed = 0
    for conn in connections:
        assert conn.call("join", {"ref": consult.ref}, namespace="/call", timeout=TIMEOUT)["ok"]
        passed += sum(ack["ok"] is True for ack in flood(conn, "/call", "signal", {"ref": consult.ref, **CANDIDATE},
                                                         n=20))
    assert passed == 10 * factor  # each connection gets 10, the user as a whole 10 x factor
    inbox_b.wait_for("signal", 10 * factor)
    settle()
    assert inbox_b.count("signal") == 10 * factor


def test_a_flood_of_typing_events_is_cut_to_the_limit_and_other_rooms_carry_on(real_client, two_consults, limits):
    limits({"/room typing": "20 per minute"})
    (rural, specialist, consult), (rural2, specialist2, consult2) = two_consults
    a, b = real_client(rural), real_client(specialist)
    c, d = real_client(rural2), real_client(specialist2)
    inbox_b, inbox_d = Inbox(b, "/room", "typing"), Inbox(d, "/room", "typing")
    for client, ref in ((a, consult.ref), (b, consult.ref), (c, consult2.ref), (d, consult2.ref)):
        assert client.call("join", {"ref": ref}, namespace="/room", timeout=TIMEOUT)["ok"]

    acks = flood(a, "/room", "typing", {"ref": consult.ref, "typing": True})
    assert sum(ack["ok"] is True for ack in acks) == 20
    assert sum(_rate_limited(ack) for ack in acks) == FLOOD - 20
    inbox_b.wait_for("typing", 20)
    settle()
    assert inbox_b.count("typing") == 20

    assert a.call("send", {"ref": consult.ref, "client_id": "after-flood-1", "body": "still here"},
                  namespace="/room", timeout=TIMEOUT)["ok"]
    assert c.call("typing", {"ref": consult2.ref, "typing": True}, namespace="/room", timeout=TIMEOUT)["ok"]
    inbox_d.wait_for("typing", 1)


def test_a_flood_of_notes_awareness_is_cut_to_the_limit(real_client, two_consults, limits):
    limits({"/notes focus": "30 per minute"})
    (rural, specialist, consult), _ = two_consults
    a, b = real_client(rural, namespace="/notes"), real_client(specialist, namespace="/notes")
    inbox_b = Inbox(b, "/notes", "focus")
    for client in (a, b):
        assert client.call("join", {"ref": consult.ref}, namespace="/notes", timeout=TIMEOUT)["ok"]
    acks = flood(a, "/notes", "focus", {"ref": consult.ref, "section": "history", "cursor": None})
    assert sum(ack["ok"] is True for ack in acks) == 30
    assert sum(_rate_limited(ack) for ack in acks) == FLOOD - 30
    inbox_b.wait_for("focus", 30)
    settle()
    assert inbox_b.count("focus") == 30


def test_a_thousand_refused_sends_leave_a_bounded_number_of_audit_rows(real_client, two_consults, make, app,
                                                                        monkeypatch):
    # a window no flood can straddle, so the number of rows is exact (a turning window would
    # only start the count again: per window, `allowance` rows and one per power of ten)
    monkeypatch.setitem(app.config, "AUDIT_REFUSAL_WINDOW_SECONDS", 10**8)
    (_, _, consult), _ = two_consults
    db.session.rollback()
    stranger = make.specialist(name="Dr Outsider")
    s = real_client(stranger)
    first = s.call("send", {"ref": consult.ref, "client_id": "outsider-0000", "body": "let me in"},
                   namespace="/room", timeout=TIMEOUT)
    assert first["ok"] is False and first["status"] == 404

    def denied() -> list[AuditEvent]:
        db.session.rollback()  # a fresh snapshot: the server committed on its own connections
        return list(db.session.scalars(select(AuditEvent).where(
            AuditEvent.action == "room.access_denied", AuditEvent.actor_id == stranger.id).order_by(AuditEvent.id)))

    assert len(denied()) == 1  # the first refusal is audited at once

    acks = flood(s, "/room", "send", {"ref": consult.ref, "client_id": "outsider-0001", "body": "let me in"},
                 n=FLOOD - 1)
    assert all(ack["ok"] is False and ack["status"] == 404 for ack in acks)
    rows = denied()
    allowance = app.config["AUDIT_REFUSALS_PER_WINDOW"]
    # one by one up to the allowance, then only at the 100th and the 1,000th, with the count
    assert len(rows) == allowance + 2, [row.detail for row in rows]
    assert [row.detail.get("count") for row in rows[allowance:]] == [100, 1000]
