"""Concurrency on PostgreSQL: the database, not a Python check, prevents double booking."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from flask import Flask
from sqlalchemy import func, select

from tests.conftest import Factory, build_postgres_app, emptied
from webapp.consults import services as consults
from webapp.errors import Conflict
from webapp.extensions import db
from webapp.models import Appointment, Consult, ConsultStatus, Role
from webapp.scheduling import services as scheduling

pytestmark = pytest.mark.postgres
THREADS = 20


@pytest.fixture(scope="module")
def _pg_app(tmp_path_factory) -> Flask:
    return build_postgres_app("concurrency", tmp_path_factory, THREADS)


@pytest.fixture
def pg_app(_pg_app: Flask):
    yield from emptied(_pg_app)


def _race(app: Flask, work) -> tuple[Counter, list[BaseException]]:
    """Run work(i) in THREADS threads released at the same instant."""
    barrier = threading.Barrier(THREADS)
    outcomes: Counter = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        with app.app_context():
            barrier.wait()
            try:
                work(i)
                result = "ok"
            except Conflict:
                result = "conflict"
            except BaseException as exc:  # anything else is a defect
                with lock:
                    errors.append(exc)
                result = "error"
            finally:
                db.session.remove()
            with lock:
                outcomes[result] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return outcomes, errors


def test_twenty_threads_booking_the_same_slot_exactly_one_wins(pg_app):
    make = Factory()
    specialist = make.specialist()
    make.availability(specialist)
    rural = make.rural()
    refs = [make.accepted(rural, specialist).ref for _ in range(THREADS)]
    slot = scheduling.open_slots(specialist)[0]
    rural_id = rural.id

    def book(i: int) -> None:
        user = db.session.get(type(rural), rural_id)
        consults.book(user, refs[i], slot.starts_at)

    outcomes, errors = _race(pg_app, book)

    assert errors == []
    assert outcomes == Counter({"ok": 1, "conflict": THREADS - 1})
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(Appointment).where(
        Appointment.specialist_id == specialist.id, Appointment.cancelled_at.is_(None))) == 1
    statuses = Counter(db.session.scalars(select(Consult.status).where(Consult.ref.in_(refs))))
    assert statuses == Counter({ConsultStatus.SCHEDULED: 1, ConsultStatus.ACCEPTED: THREADS - 1})


def test_twenty_specialists_accepting_one_request_exactly_one_wins(pg_app):
    make = Factory()
    specialists = [make.specialist() for _ in range(THREADS)]
    rural = make.rural()
    ref = make.requested(rural).ref
    ids = [s.id for s in specialists]

    def accept(i: int) -> None:
        consults.accept(db.session.get(type(rural), ids[i]), ref)

    outcomes, errors = _race(pg_app, accept)

    assert errors == []
    assert outcomes == Counter({"ok": 1, "conflict": THREADS - 1})
    db.session.expire_all()
    consult = db.session.scalar(select(Consult).where(Consult.ref == ref))
    assert consult.status == ConsultStatus.ACCEPTED
    assert consult.specialist.role == Role.SPECIALIST
    assert sum(1 for o in consult.offers if o.status.value == "accepted") == 1
