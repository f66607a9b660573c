"""The delivery worker as a real process: killed with SIGKILL in the middle of a batch and restarted,
every delivery is done and none twice; two workers on PostgreSQL send each delivery once."""

from __future__ import annotations

import signal
from collections import Counter

import pytest
from sqlalchemy import func, select

from tests.conftest import Factory, build_postgres_app, truncate_all
from tests.notifications.conftest import Hook, start_worker, stop_worker, wait_until
from webapp.extensions import db
from webapp.models import Delivery
from webapp.notifications import services as notifications


def _outbox(make: Factory, count: int) -> list[str]:
    """count notifications (email + webhook each), committed; the webhook keys in delivery order."""
    users = [make.rural(email=f"doctor{i}@test.example") for i in range(4)]
    for i in range(count):
        notifications.notify([users[i % len(users)]], "account.approved")
    db.session.commit()
    return [f"huizhen-{d.notification_id}-webhook" for d in db.session.scalars(
        select(Delivery).where(Delivery.channel == "webhook").order_by(Delivery.id))]


def _pending() -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count(Delivery.id)).where(Delivery.status != "sent"))


def test_killed_mid_batch_and_restarted_every_delivery_is_sent_once(app, make, database_url, mailbox,
                                                                     tmp_path, monkeypatch):
    box, smtp_url = mailbox
    hook = Hook()
    monkeypatch.setitem(app.config, "NOTIFY_WEBHOOK_URL", hook.url)
    keys = _outbox(make, 12)
    hook.hold = keys[5]  # the 6th webhook is held unanswered: the worker is killed while it waits
    settings = {"SMTP_URL": smtp_url, "NOTIFY_WEBHOOK_URL": hook.url, "NOTIFY_WEBHOOK_SECRET": "s",
                "NOTIFY_BATCH": "50", "NOTIFY_LEASE_SECONDS": "4"}
    worker = start_worker(database_url, tmp_path / "worker.log", **settings)
    try:
        assert hook.held.wait(90), (tmp_path / "worker.log").read_text()
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        assert 0 < _pending() < 24  # some done, the rest of the batch claimed and not finished
        assert sorted(hook.keys()) == sorted(keys[:5])
        worker = start_worker(database_url, tmp_path / "worker.log", **settings)
        wait_until(lambda: _pending() == 0, 120, "every delivery sent after the restart")
    finally:
        stop_worker(worker)
        hook.stop()
    assert Counter(hook.keys()) == Counter(keys)  # each webhook accepted once
    ids = Counter(m["Message-ID"] for m in box.messages)
    assert len(ids) == 12 and set(ids.values()) == {1}  # each mail once
    assert all(d.attempts in (1, 2) for d in db.session.scalars(select(Delivery)))


@pytest.fixture(scope="module")
def pg_app(tmp_path_factory):
    return build_postgres_app("workers", tmp_path_factory, threads=4)


def test_two_workers_on_postgresql_send_each_delivery_once(pg_app, mailbox, tmp_path):
    box, smtp_url = mailbox
    hook = Hook()
    truncate_all(pg_app)
    url = pg_app.config["SQLALCHEMY_DATABASE_URI"]
    with pg_app.app_context():
        pg_app.config["NOTIFY_WEBHOOK_URL"] = hook.url
        keys = _outbox(Factory(), 40)
        settings = {"SMTP_URL": smtp_url, "NOTIFY_WEBHOOK_URL": hook.url, "NOTIFY_WEBHOOK_SECRET": "s",
                    "NOTIFY_BATCH": "3", "NOTIFY_LEASE_SECONDS": "120"}
        workers = [start_worker(url, tmp_path / f"worker{i}.log", **settings) for i in range(2)]
        try:
            wait_until(lambda: _pending() == 0, 180, "every delivery sent by the two workers")
        finally:
            for w in workers:
                stop_worker(w)
            hook.stop()
            pg_app.config["NOTIFY_WEBHOOK_URL"] = ""
        assert Counter(hook.keys()) == Counter(keys)
        ids = Counter(m["Message-ID"] for m in box.messages)
        assert len(ids) == 40 and set(ids.values()) == {1}
        assert set(db.session.scalars(select(Delivery.attempts))) == {1}
        logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
        print("worker logs:", [log.count("delivered:") for log in logs])
        db.session.remove()
