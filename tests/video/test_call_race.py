"""Two doctors pressing Join at the same moment share one call record, on PostgreSQL and SQLite."""

from __future__ import annotations

import threading

from flask import Flask
from sqlalchemy import func, select

from tests.conftest import Factory
from webapp.extensions import db
from webapp.models import CallSession, Consult, User, utcnow
from webapp.video import services as video

ROUNDS = 5
THREADS = 4
RACE_DB = "callrace"


def _both_join(app: Flask, consult_id: int, user_ids: tuple[int, int]) -> tuple[list[int], list[BaseException]]:
    """Both parties call start_call at once, each in its own request context; (call ids, errors)."""
    barrier = threading.Barrier(len(user_ids))
    ids: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def join(user_id: int) -> None:
        with app.test_request_context():
            try:
                barrier.wait()  # (on SQLite the first read takes the write lock: none is held while waiting)
                user = db.session.get(User, user_id)
                consult = db.session.get(Consult, consult_id)
                call = video.start_call(user, consult, audit="call.joined")
                with lock:
                    ids.append(call.id)
            except BaseException as exc:  # any error is a defect
                with lock:
                    errors.append(exc)
            finally:
                db.session.rollback()
                db.session.remove()

    threads = [threading.Thread(target=join, args=(uid,)) for uid in user_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return ids, errors


def _race_rounds(app: Flask) -> None:
    make = Factory()
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    ids_of = (rural.id, specialist.id)
    consult_id = consult.id
    for _ in range(ROUNDS):
        db.session.rollback()  # this thread holds no transaction (on SQLite, no snapshot) during the race
        ids, errors = _both_join(app, consult_id, ids_of)
        assert errors == []
        assert len(ids) == 2 and ids[0] == ids[1], ids
        db.session.expire_all()
        assert db.session.scalar(select(func.count()).select_from(CallSession).where(
            CallSession.consult_id == consult_id, CallSession.ended_at.is_(None))) == 1
        # the call ends; the next round starts a new one
        db.session.get(CallSession, ids[0]).ended_at = utcnow()
        db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(CallSession).where(
        CallSession.consult_id == consult_id)) == ROUNDS


def test_simultaneous_joins_share_one_call_on_postgresql(race_pg_app):
    _race_rounds(race_pg_app)


def test_simultaneous_joins_share_one_call_on_sqlite(race_sqlite_app):
    _race_rounds(race_sqlite_app)


# --- two Join clicks at once, over real sockets: one of the two offers ------------------------------

JOIN_ROUNDS = 12


def test_simultaneous_joins_over_real_sockets_leave_exactly_one_doctor_offering(app, live_server):
    """Two joins handled at the same moment (one server thread per WebSocket) are taken in turn: in
    every round exactly one of the two acks names the other doctor (that one offers to them), so
    the call cannot wait forever with each side waiting for the other's offer."""
    import socketio

    from tests.conftest import cookie_header, http_session

    make = Factory()
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    ref = consult.ref
    clients = []
    for user in (rural, specialist):
        sio = socketio.Client(reconnection=False)
        sio.connect(live_server.url, namespaces=["/call"], transports=["websocket"], wait_timeout=10,
                    headers={"Cookie": cookie_header(http_session(live_server.url, user.email))})
        clients.append(sio)
    try:
        for _ in range(JOIN_ROUNDS):
            barrier = threading.Barrier(2)
            acks: list[dict] = [{}, {}]

            def join(i: int, barrier: threading.Barrier = barrier, acks: list[dict] = acks) -> None:
                barrier.wait()
                acks[i] = clients[i].call("join", {"ref": ref}, namespace="/call", timeout=30)

            threads = [threading.Thread(target=join, args=(i,)) for i in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(40)
            assert all(a.get("ok") for a in acks), acks
            seen = sorted(len(a["peers"]) for a in acks)
            assert seen == [0, 1], acks  # one joined first (nobody there), the other saw them
            for i in (0, 1):
                assert clients[i].call("leave", {"ref": ref}, namespace="/call", timeout=30)["ok"]
    finally:
        for sio in clients:
            sio.disconnect()
