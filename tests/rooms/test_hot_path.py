"""The chat's send on PostgreSQL: one autocommit statement on a pool without pre-ping (webapp/hotdb.py).

Run on a PostgreSQL database of its own in both phases of the suite (SQLite keeps its transaction).
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, text

from tests.conftest import Factory
from webapp import hotdb
from webapp.auth import sessions
from webapp.extensions import db
from webapp.models import Message, RoomCounter
from webapp.rooms import send

THREADS = 6
RACE_DB = "hotpath"


@pytest.fixture(autouse=True)
def _no_rate_limit_here(race_pg_app, monkeypatch):
    """These tests send faster than a person (the limit has tests of its own)."""
    monkeypatch.setitem(race_pg_app.config, "CHAT_MESSAGES_PER_SECOND", 1000)


def _sender(user, consult) -> send.Sender:
    return send.Sender(user.id, sessions.start(user), user.full_name, consult.id)


def _counter(consult_id: int) -> int:
    db.session.rollback()
    return db.session.scalar(select(RoomCounter.last_seq).where(RoomCounter.consult_id == consult_id))


def _stored(consult_id: int) -> list[tuple[int, str]]:
    db.session.rollback()
    return [tuple(r) for r in db.session.execute(select(Message.seq, Message.client_id).where(
        Message.consult_id == consult_id).order_by(Message.seq))]


def _hot_backends(app) -> list[int]:
    """The PostgreSQL backends of the hot pool's idle connections."""
    engine = hotdb.hot_engine(app)
    pids = []
    conns = [engine.connect() for _ in range(2)]
    for conn in conns:
        pids.append(conn.execute(text("SELECT pg_backend_pid()")).scalar())
    for conn in conns:
        conn.close()
    return pids


def test_the_send_is_one_autocommit_statement_without_a_ping(race_pg_app):
    """One round trip: no SELECT 1, no BEGIN/COMMIT around the statement."""
    from sqlalchemy import event

    make = Factory()
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    sender = _sender(rural, consult)
    send.post_message_fast(sender, "warm-0001", "warms the pool and the statement cache")
    engine = hotdb.hot_engine(race_pg_app)
    assert engine is not None and engine.url == db.engine.url and engine is not db.engine
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement.split()[0].upper())

    event.listen(engine, "before_cursor_execute", record)
    try:
        fast = send.post_message_fast(sender, "hot-00001", "one statement")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert fast.wire is not None and fast.wire["seq"] == 2
    assert seen == ["WITH"], seen  # the data-modifying CTE alone; the pool neither pings nor begins
    assert _counter(consult.id) == 2


def test_a_retried_or_refused_send_takes_no_number_in_autocommit(race_pg_app):
    """Nothing to roll back in autocommit: the counter moves only with a stored message."""
    make = Factory()
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    sender = _sender(rural, consult)
    assert send.post_message_fast(sender, "gap-00001", "first").wire["seq"] == 1
    retry = send.post_message_fast(sender, "gap-00001", "first")  # the same client id: a retry
    assert retry.wire is None and retry.retried is False
    outsider = make.specialist()
    refused = send.post_message_fast(_sender(outsider, consult), "gap-00002", "not a party")
    assert refused.wire is None
    ahead = send.post_message_fast(sender, "gap-00003", "numbered", client_seq=5)
    behind = send.post_message_fast(sender, "gap-00004", "out of order", client_seq=4)
    assert ahead.wire["seq"] == 2 and behind.wire is None
    assert _counter(consult.id) == 2
    assert send.post_message_fast(sender, "gap-00005", "next").wire["seq"] == 3
    assert _stored(consult.id) == [(1, "gap-00001"), (2, "gap-00003"), (3, "gap-00005")]


def test_a_pooled_connection_that_died_is_replaced_and_the_message_stored_once(race_pg_app, caplog):
    """PostgreSQL ended the pool's idle connections (a restart, a network cut): the send retries once."""
    make = Factory()
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    sender = _sender(rural, consult)
    assert send.post_message_fast(sender, "dead-0001", "before").wire is not None
    pids = _hot_backends(race_pg_app)
    with db.engine.connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(pid) FROM unnest(CAST(:pids AS int[])) AS pid"),
                      {"pids": pids})
        admin.commit()
    fast = send.post_message_fast(sender, "dead-0002", "after the connections died")
    assert fast.wire is not None and fast.wire["seq"] == 2
    assert "retrying once on a fresh one" in caplog.text  # the dead connection was met, not skipped
    assert _stored(consult.id) == [(1, "dead-0001"), (2, "dead-0002")]


def test_a_send_cut_off_after_it_committed_is_still_announced(race_pg_app, monkeypatch):
    """The first attempt stored the message and then lost its connection: the retry finds the client
    id taken, and send_message answers with the stored message as new (it was never announced)."""
    make = Factory()
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    real_run, calls = hotdb.run, []

    def commit_then_die(engine, work):
        def first(conn):
            calls.append("first")
            work(conn)  # autocommit: stored for good
            conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))  # then the link dies

        if not calls:
            with engine.connect() as conn:
                try:
                    first(conn)
                except Exception as exc:
                    assert getattr(exc, "connection_invalidated", False), exc
            with engine.connect() as conn:
                return work(conn), True
        return real_run(engine, work)

    monkeypatch.setattr(hotdb, "run", commit_then_die)
    resolved = []

    def resolve():
        resolved.append(1)
        db.session.rollback()
        return db.session.merge(rural), db.session.merge(consult)

    sent = send.send_message(_sender(rural, consult), resolve, "cut-00001", "stored before the cut")
    assert calls == ["first"] and resolved == [1]
    assert sent.created is True and sent.wire["seq"] == 1  # announced to the room, not taken as a duplicate
    assert _stored(consult.id) == [(1, "cut-00001")] and _counter(consult.id) == 1


def test_many_senders_at_once_share_one_gap_free_sequence(race_pg_app):
    make = Factory()
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    senders = [_sender(rural, consult), _sender(specialist, consult)]
    consult_id, per_thread = consult.id, 15
    db.session.rollback()
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def sending(t: int) -> None:
        with race_pg_app.app_context():
            try:
                barrier.wait()
                for i in range(per_thread):
                    fast = send.post_message_fast(senders[t % 2], f"t{t}-{i:05d}", f"message {i}")
                    assert fast.wire is not None, (t, i)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=sending, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    seqs = [seq for seq, _ in _stored(consult_id)]
    assert seqs == list(range(1, THREADS * per_thread + 1))
    assert _counter(consult_id) == THREADS * per_thread
    assert db.session.scalar(select(func.count()).select_from(Message)) == THREADS * per_thread


def test_a_failing_pool_or_database_leaves_the_message_to_the_full_path_counted_once(race_pg_app, monkeypatch):
    """An exhausted pool (TimeoutError) is not a DBAPIError: it too hands the message over, charged."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    make = Factory()
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    sender = _sender(rural, consult)

    def exhausted(engine, work):
        raise PoolTimeout("QueuePool limit of size 10 overflow 10 reached")

    monkeypatch.setattr(hotdb, "run", exhausted)
    fast = send.post_message_fast(sender, "pool-0001", "no connection")
    assert (fast.wire, fast.rate_charged, fast.retried) == (None, True, False)


def test_a_retry_that_fails_too_still_says_a_first_attempt_may_have_committed(race_pg_app):
    from sqlalchemy.exc import DBAPIError, OperationalError

    engine = hotdb.hot_engine(race_pg_app)
    calls = []

    def dies(conn):
        calls.append(1)
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True)

    try:
        hotdb.run(engine, dies)
    except DBAPIError as exc:
        assert getattr(exc, "hot_retried", False) is True
    else:
        raise AssertionError("the second failure was swallowed")
    assert len(calls) == 2
