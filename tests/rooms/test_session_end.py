"""Sessions end everywhere: real servers on loopback ports, python-socketio clients.

A party of a consult is connected to /room, /notes and /call. When their session ends (sign-out,
suspension, password change, the idle timeout) the server closes those sockets at once, so that
nothing the other party goes on sending reaches them; across processes the order travels through
Redis. Idleness is judged on the server: a cookie replayed after the idle time opens nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio as sio_client
from sqlalchemy import select, update

from tests.conftest import PASSWORD, cookie_header, free_port, http_session, require
from tests.notes.realserver import unpatch_socket_server
from webapp.auth import services as accounts
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import UserSession, utcnow

NAMESPACES = ("/room", "/notes", "/call")
TIMEOUT = 15
REDIS_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")  # as .ci/run sets it
ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.usefixtures("generous_chat")


class Party:
    """One user's python-socketio client on the three consult namespaces, recording what arrives."""

    def __init__(self, base_url: str, session: requests.Session, user_id: int,
                 namespaces: tuple[str, ...] = NAMESPACES) -> None:
        self.user_id = user_id
        self.session = session
        self.received: list[tuple[str, str, Any]] = []
        self.gone = {ns: threading.Event() for ns in namespaces}
        self.client = sio_client.Client(reconnection=False)
        for ns in namespaces:
            for name in ("message", "typing", "presence", "update", "focus", "signal", "peer-state",
                         "peer-joined", "peer-left", "read"):
                self.client.on(name, self._recorder(ns, name), namespace=ns)
            self.client.on("disconnect", lambda *a, ns=ns: self.gone[ns].set(), namespace=ns)
        self.client.connect(base_url, namespaces=list(namespaces), transports=["websocket"],
                            headers={"Cookie": cookie_header(session)}, wait_timeout=10)

    def _recorder(self, ns: str, name: str):
        def record(*args: Any) -> None:
            self.received.append((ns, name, args[0] if args else None))
        return record

    def call(self, ns: str, event: str, data: dict[str, Any]) -> dict[str, Any]:
        return self.client.call(event, data, namespace=ns, timeout=TIMEOUT)

    def join_all(self, ref: str) -> None:
        for ns in self.gone:
            ack = self.call(ns, "join", {"ref": ref})
            assert ack["ok"] is True, (ns, ack)

    def wait_gone(self, namespaces: tuple[str, ...] = NAMESPACES) -> None:
        for ns in namespaces:
            assert self.gone[ns].wait(TIMEOUT), f"the server did not close {ns} of user {self.user_id}"

    def close(self) -> None:
        if self.client.connected:
            self.client.disconnect()


def csrf_from(session: requests.Session, url: str) -> str:
    page = session.get(url, timeout=10).text
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def post(session: requests.Session, base_url: str, path: str, data: dict | None = None,
         token_from: str = "/") -> requests.Response:
    token = csrf_from(session, base_url + token_from)
    return session.post(base_url + path, data={"csrf_token": token, **(data or {})}, allow_redirects=False,
                        timeout=10)


def other_party_keeps_sending(sender: Party, ref: str, tag: str) -> None:
    """Chat, notes and call traffic from the party still signed in (each acknowledged)."""
    assert sender.call("/room", "send", {"ref": ref, "client_id": f"{tag}-chat-0001", "body": "still here"})["ok"]
    assert sender.call("/room", "typing", {"ref": ref, "typing": True})["ok"]
    assert sender.call("/notes", "focus", {"ref": ref, "section": "plan", "cursor": None})["ok"]
    assert sender.call("/call", "state", {"ref": ref, "muted": True})["ok"]


def age_sessions(user_id: int, seconds: float) -> None:
    """Make every session of the user look last active that long ago (time passing, on the server)."""
    db.session.rollback()  # a fresh snapshot: the server wrote meanwhile
    db.session.execute(update(UserSession).where(UserSession.user_id == user_id)
                       .values(last_seen_at=utcnow() - timedelta(seconds=seconds)))
    db.session.commit()


@pytest.fixture
def consult_parties(make):
    rural = make.rural(name="Dr Ma Xiaoli")
    specialist = make.specialist(name="Dr Zhou Wei")
    consult = make.scheduled(rural, specialist)
    return rural, specialist, consult


@pytest.fixture
def server(app, live_server):
    unpatch_socket_server(app)
    return live_server


@pytest.fixture
def party(server) -> Iterator:
    made: list[Party] = []

    def connect(user, session: requests.Session | None = None, namespaces=NAMESPACES) -> Party:
        p = Party(server.url, session or http_session(server.url, user.email), user.id, namespaces)
        made.append(p)
        return p

    yield connect
    for p in made:
        p.close()


# --- sign-out, suspension, password change -------------------------------------------------------


@pytest.mark.parametrize("how", ["logout", "suspended", "password_changed", "password_reset"])
def test_an_ended_session_stops_receiving_on_room_notes_and_call(app, make, consult_parties, server, party, how):
    rural, specialist, consult = consult_parties
    coordinator_email = make.coordinator().email
    db.session.commit()  # the test's own snapshot ends before the server writes
    leaving, staying = party(rural), party(specialist)
    leaving.join_all(consult.ref)
    staying.join_all(consult.ref)
    other_party_keeps_sending(staying, consult.ref, "before")
    deadline = time.monotonic() + TIMEOUT
    while not any(ns == "/room" and name == "message" for ns, name, _ in leaving.received):
        assert time.monotonic() < deadline, "the connection did not receive before the session ended"
        time.sleep(0.02)

    if how == "logout":
        assert post(leaving.session, server.url, "/logout").status_code == 302
    elif how == "suspended":
        coordinator = http_session(server.url, coordinator_email)
        r = post(coordinator, server.url, f"/admin/users/{rural.id}/suspend", {"reason": "Licence lapsed"},
                 token_from="/admin/registrations")
        assert r.status_code == 302
    elif how == "password_changed":  # on another device of the same user
        phone = http_session(server.url, rural.email)
        new = "a-new-passphrase-for-ma"
        r = post(phone, server.url, "/account/password",
                 {"current_password": PASSWORD, "new_password": new, "confirm": new}, token_from="/account/password")
        assert r.status_code == 302
    else:  # a coordinator-issued reset link, used by the clinician
        coordinator = http_session(server.url, coordinator_email)
        r = post(coordinator, server.url, f"/admin/users/{rural.id}/reset-link", token_from="/admin/registrations")
        path = re.search(r"(/password/reset/[A-Za-z0-9_-]+)", r.text).group(1)
        anyone = requests.Session()
        new = "a-new-passphrase-for-ma"
        assert post(anyone, server.url, path, {"new_password": new, "confirm": new}, token_from=path).status_code == 302

    leaving.wait_gone()
    leaving.received.clear()
    other_party_keeps_sending(staying, consult.ref, "after")
    time.sleep(0.5)  # the other party's acks are in; anything addressed to the ended socket would be too
    assert leaving.received == []
    assert not leaving.client.connected
    assert staying.client.connected and all(not e.is_set() for e in staying.gone.values())
    # and a new socket with the ended session's cookie is refused
    with pytest.raises(sio_client.exceptions.ConnectionError):
        Party(server.url, leaving.session, rural.id, ("/room",))


def test_a_redis_outage_never_makes_sign_out_fail(app, consult_parties, server, party, monkeypatch, caplog):
    rural, _, consult = consult_parties
    monkeypatch.setitem(app.config, "REDIS_URL", f"redis://127.0.0.1:{free_port()}/15")  # nobody listens
    leaving = party(rural)
    leaving.join_all(consult.ref)
    assert post(leaving.session, server.url, "/logout").status_code == 302
    leaving.wait_gone()  # this process's sockets end at once; other nodes catch up by their sweep
    assert "could not publish" in caplog.text


# --- consult changes ----------------------------------------------------------------------------------


def test_cancelling_a_consult_closes_its_call_connections_but_keeps_the_read_only_room(consult_parties, party):
    rural, specialist, consult = consult_parties
    specialist_party = party(specialist)
    specialist_party.join_all(consult.ref)
    db.session.rollback()  # a fresh snapshot: the server wrote meanwhile
    consults.cancel(rural, consult.ref, "The patient was transferred")
    assert specialist_party.gone["/call"].wait(TIMEOUT), "the call connection of a cancelled consult stays open"
    assert not specialist_party.gone["/room"].is_set() and not specialist_party.gone["/notes"].is_set()
    assert specialist_party.call("/room", "backfill", {"ref": consult.ref, "after_seq": 0})["ok"] is True


def test_the_sweep_closes_connections_to_a_consult_they_lost_when_the_order_never_came(app, consult_parties,
                                                                                       party, monkeypatch):
    """A change made on a node whose Redis order was lost: each process's sweep catches up."""
    from webapp.models import Consult, ConsultStatus

    _, specialist, consult = consult_parties
    specialist_party = party(specialist)
    specialist_party.join_all(consult.ref)
    db.session.rollback()
    db.session.execute(update(Consult).where(Consult.id == consult.id).values(status=ConsultStatus.CANCELLED))
    db.session.commit()  # no recheck order at all
    monkeypatch.setitem(app.config, "SESSION_SWEEP_SECONDS", 1)
    assert specialist_party.gone["/call"].wait(TIMEOUT), "the sweep left a lost call connection open"
    assert not specialist_party.gone["/room"].is_set() and not specialist_party.gone["/notes"].is_set()


# --- idleness, judged on the server --------------------------------------------------------------------


def test_a_sign_in_cookie_replayed_after_the_idle_time_opens_nothing(app, consult_parties, server, party,
                                                                      monkeypatch):
    monkeypatch.setitem(app.config, "SESSION_SWEEP_SECONDS", 3600)  # this test shows the checks, not the sweep
    rural, specialist, consult = consult_parties
    sender = party(specialist)
    sender.join_all(consult.ref)
    assert sender.call("/room", "send", {"ref": consult.ref, "client_id": "backlog-0001", "body": "x"})["ok"]
    signed_in = http_session(server.url, rural.email)  # the cookie issued at sign-in, never used since
    open_socket = party(rural, signed_in, ("/room",))

    age_sessions(rural.id, app.config["IDLE_TIMEOUT_MINUTES"] * 60 + 60)

    refused = open_socket.call("/room", "join", {"ref": consult.ref, "after_seq": 0})
    assert refused["ok"] is False and "messages" not in refused, "an idle session read the backlog"
    with pytest.raises(sio_client.exceptions.ConnectionError):
        Party(server.url, signed_in, rural.id, ("/room",))
    r = signed_in.get(server.url + "/consults", allow_redirects=False, timeout=10)
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    r = signed_in.get(server.url + "/", headers={"Accept": "application/json"}, allow_redirects=False, timeout=10)
    assert r.status_code in (302, 401)
    open_socket.wait_gone(("/room",))  # the idle sign-out closed the session's sockets too


def test_an_unattended_socket_is_disconnected_when_its_session_goes_idle(app, consult_parties, party, monkeypatch):
    monkeypatch.setitem(app.config, "SESSION_SWEEP_SECONDS", 1)
    rural, _, consult = consult_parties
    unattended = party(rural)
    unattended.join_all(consult.ref)
    age_sessions(rural.id, app.config["IDLE_TIMEOUT_MINUTES"] * 60 + 60)
    unattended.wait_gone()


def test_a_doctor_active_in_the_consult_keeps_the_session_and_passive_events_do_not(app, consult_parties, party):
    rural, _, consult = consult_parties
    doctor = party(rural)
    doctor.join_all(consult.ref)
    almost_idle = app.config["IDLE_TIMEOUT_MINUTES"] * 60 - 120

    def last_seen_age() -> float:
        db.session.rollback()
        seen = db.session.scalar(select(UserSession.last_seen_at).where(UserSession.user_id == rural.id))
        return (utcnow() - seen).total_seconds()

    for event, ns, data in [
        ("typing", "/room", {"ref": consult.ref, "typing": True}),
        ("send", "/room", {"ref": consult.ref, "client_id": "active-0001", "body": "chatting"}),  # fast path
        ("focus", "/notes", {"ref": consult.ref, "section": "plan", "cursor": None}),
        ("stats", "/call", {"ref": consult.ref}),  # sent every 15 s while a call is connected
    ]:
        age_sessions(rural.id, almost_idle)
        doctor.call(ns, event, data)
        assert last_seen_age() < 60, f"{event} on {ns} did not count as activity"

    for event, ns, data in [("read", "/room", {"ref": consult.ref, "seq": 1}),
                            ("backfill", "/room", {"ref": consult.ref, "after_seq": 0}),
                            ("sync", "/notes", {"ref": consult.ref})]:
        age_sessions(rural.id, almost_idle)
        assert doctor.call(ns, event, data)["ok"] is True
        assert last_seen_age() > almost_idle - 60, f"{event} (sent by the browser itself) kept the session alive"


# --- across processes, through Redis --------------------------------------------------------------------


def redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:
        return False


class Node:
    """Huizhen in a process of its own (tests/rooms/node.py), sharing the database and Redis."""

    def __init__(self, database_url: str, channel: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "NODE_DATABASE_URL": database_url, "NODE_REDIS_URL": REDIS_URL,
               "NODE_CHANNEL": channel, "NODE_ORIGIN": self.url, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.rooms.node", str(self.port)], cwd=ROOT, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.url + "/login", timeout=2)
                return
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("node did not start: " + self.proc.stderr.read().decode()[-2000:]) from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_sign_out_on_one_node_disconnects_the_users_sockets_on_another_through_redis(app, consult_parties,
                                                                                      database_url):
    require(redis_available(), f"Redis is not reachable at {REDIS_URL}")
    require(database_url != "sqlite://", "the nodes need a database file or server they can share")
    rural, specialist, consult = consult_parties
    db.session.commit()
    channel = f"huizhen:sessions:test:{os.getpid()}:{time.monotonic_ns()}"
    node_a, node_b = Node(database_url, channel), Node(database_url, channel)  # sweeps every hour: only Redis
    parties: list[Party] = []
    try:
        on_b = Party(node_b.url, http_session(node_a.url, rural.email), rural.id)  # signed in on A, socket on B
        parties.append(on_b)
        staying = Party(node_b.url, http_session(node_b.url, specialist.email), specialist.id)
        parties.append(staying)
        on_b.join_all(consult.ref)
        staying.join_all(consult.ref)

        assert post(on_b.session, node_a.url, "/logout").status_code == 302  # on node A
        on_b.wait_gone()
        on_b.received.clear()
        other_party_keeps_sending(staying, consult.ref, "cross")
        time.sleep(0.5)
        assert on_b.received == []
    finally:
        for p in parties:
            p.close()
        node_a.stop()
        node_b.stop()


def test_ending_sessions_needs_no_redis_in_a_single_process(app, make):
    """Without REDIS_URL the order is carried out in-process only, and nothing fails."""
    assert not app.config.get("REDIS_URL")
    user = make.rural()
    accounts.end_sessions(user, "logout")  # no socket, no queue: no error


def test_the_sweep_checks_consults_a_step_at_a_time_and_yields_between_steps(app, make, monkeypatch):
    """A busy process's sweep must not hold the event loop for all its rooms at once: it checks
    SWEEP_CONSULTS_PER_STEP consults, yields, and goes on; what it finds is the same."""
    from webapp import sessionbus
    from webapp.realtime import connections

    rural, specialist, outsider = make.rural(), make.specialist(), make.specialist()
    many = [make.scheduled(rural, specialist) for _ in range(sessionbus.SWEEP_CONSULTS_PER_STEP + 5)]
    table, tracked = connections("/room", app), []
    for i, c in enumerate(many):
        for who in (rural, specialist) + ((outsider,) if i in (3, len(many) - 2) else ()):
            sid = f"sweep-{c.id}-{who.id}"
            table.add(sid, c.id, who.id, who.full_name, c.ref)
            tracked.append(sessionbus.Tracked("/room", sid, who.id, "k"))
    yields: list[float] = []
    the_bus = sessionbus.bus(app)
    monkeypatch.setattr(the_bus, "_sleep", yields.append)
    try:
        refused = the_bus._not_entitled(tracked)
    finally:
        for t in tracked:
            table.remove(t.sid)
    assert sorted(t.sid for t in refused) == sorted(
        f"sweep-{many[i].id}-{outsider.id}" for i in (3, len(many) - 2))  # one in each step
    assert yields == [0]  # two steps, one yield between them
