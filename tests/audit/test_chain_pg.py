"""Concurrency on PostgreSQL: writers racing to append audit entries never fork the chain."""

from __future__ import annotations

import threading
from itertools import pairwise

import pytest
from flask import Flask
from sqlalchemy import select

from tests.conftest import Factory, build_postgres_app, emptied
from webapp.audit.chain import verify
from webapp.audit.services import record, record_now
from webapp.extensions import db
from webapp.models import AuditEvent, User

pytestmark = pytest.mark.postgres
THREADS = 20
ROUNDS = 10


@pytest.fixture(scope="module")
def _pg_app(tmp_path_factory) -> Flask:
    return build_postgres_app("chain", tmp_path_factory, THREADS)


@pytest.fixture
def pg_app(_pg_app: Flask):
    yield from emptied(_pg_app)


def test_twenty_writers_at_once_keep_one_unbroken_chain(pg_app):
    make = Factory()
    users = [make.rural() for _ in range(4)]
    ids = [u.id for u in users]
    before = verify(db.session).entries
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        with pg_app.app_context():
            try:
                user = db.session.get(User, ids[i % len(ids)])
                barrier.wait()
                for n in range(ROUNDS):
                    if n % 2:
                        record_now("test.race", actor=user, detail={"thread": i, "n": n})
                    else:  # two entries and a change of another table in one transaction
                        user.full_name = f"Doctor {i}-{n}"
                        record("test.race", actor=user, detail={"thread": i, "n": n})
                        record("test.race.more", actor=user, detail={"thread": i, "n": n})
                        db.session.commit()
            except BaseException as exc:  # any error is a defect
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert errors == []
    expected = before + THREADS * (ROUNDS // 2) * 3
    result = verify(db.session)
    assert result.ok, result.problem
    assert result.entries == result.head_seq == expected
    seqs = db.session.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)).all()
    assert seqs == list(range(1, expected + 1))
    # both entries of one transaction are neighbours in the chain
    pairs = db.session.execute(select(AuditEvent.seq, AuditEvent.action, AuditEvent.detail)
                               .where(AuditEvent.action.like("test.race%")).order_by(AuditEvent.seq)).all()
    for first, second in pairwise(pairs):
        if second.action == "test.race.more":
            assert (first.action, first.detail, second.seq) == ("test.race", second.detail, first.seq + 1)
