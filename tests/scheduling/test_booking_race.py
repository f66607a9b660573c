"""Booking under contention: exactly one winner, and the losers are refused at once, on PostgreSQL and SQLite."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from tests.conftest import Factory
from webapp.consults import services as consults
from webapp.errors import Conflict
from webapp.extensions import db
from webapp.models import Appointment, BookedBlock, Consult, ConsultOffer, ConsultStatus, User
from webapp.scheduling import services as scheduling

THREADS = 40
RACE_DB = "bookrace"


def _world(n: int) -> tuple[int, list[str], object]:
    """One specialist, n accepted consults of n rural doctors; (specialist id, refs, a free slot)."""
    make = Factory()
    specialist = make.specialist()
    make.availability(specialist)
    refs = [make.accepted(make.rural(), specialist).ref for _ in range(n)]
    slot = scheduling.open_slots(specialist)[1]
    return specialist.id, refs, slot


def _race(app: Flask, n: int, work: Callable[[int], None]) -> tuple[Counter, dict[int, str], list[BaseException]]:
    """Run work(i) in n threads released at once, each in a request context (as the routes run)."""
    barrier = threading.Barrier(n)
    outcomes: Counter = Counter()
    messages: dict[int, str] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        with app.test_request_context():
            barrier.wait()
            try:
                work(i)
                result = "ok"
            except Conflict as exc:
                result = "conflict"
                messages[i] = exc.message
            except BaseException as exc:  # anything else is a defect
                with lock:
                    errors.append(exc)
                result = "error"
            finally:
                db.session.rollback()
                db.session.remove()
            with lock:
                outcomes[result] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return outcomes, messages, errors


def _book_race(app: Flask, n: int) -> None:
    specialist_id, refs, slot = _world(n)
    offers_before = dict(db.session.execute(select(ConsultOffer.id, ConsultOffer.status)).all())
    requesters = [db.session.scalar(select(Consult.requester_id).where(Consult.ref == r)) for r in refs]
    db.session.rollback()  # this thread holds no transaction (on SQLite, no snapshot) during the race

    def book(i: int) -> None:
        consults.book(db.session.get(User, requesters[i]), refs[i], slot.starts_at)

    outcomes, messages, errors = _race(app, n, book)

    assert errors == []
    assert outcomes == Counter({"ok": 1, "conflict": n - 1})
    assert set(messages.values()) == {
        "That time has just been booked for another consult. Choose another time."}
    db.session.rollback()
    [appt] = db.session.scalars(select(Appointment).where(Appointment.specialist_id == specialist_id))
    assert appt.starts_at == slot.starts_at and appt.cancelled_at is None
    assert db.session.scalar(select(func.count()).select_from(BookedBlock)) == 2  # the slot's two blocks
    winner = db.session.get(Consult, appt.consult_id)
    statuses = Counter(db.session.scalars(select(Consult.status).where(Consult.ref.in_(refs))))
    assert statuses == Counter({ConsultStatus.SCHEDULED: 1, ConsultStatus.ACCEPTED: n - 1})
    assert winner.status == ConsultStatus.SCHEDULED
    # the losers' consults and offers are as they were
    assert dict(db.session.execute(select(ConsultOffer.id, ConsultOffer.status)).all()) == offers_before
    assert db.session.scalar(select(func.count()).select_from(Appointment)) == 1


@pytest.mark.postgres
def test_postgres_forty_threads_booking_one_slot_exactly_one_wins_the_rest_are_told(race_pg_app):
    _book_race(race_pg_app, THREADS)


def test_sqlite_ten_threads_booking_one_slot_exactly_one_wins_the_rest_are_told(race_sqlite_app):
    _book_race(race_sqlite_app, 10)


HTTP_CLIENTS = {"postgresql": 20, "sqlite": 8}


def _json_book_race(app: Flask, n: int) -> None:
    """n signed-in doctors' pages post the same slot as static/js/book.js does, released at once."""
    from tests.conftest import login
    from tests.test_http_consults import token_of

    specialist_id, refs, slot = _world(n)
    requesters = [db.session.get(User, db.session.scalar(select(Consult.requester_id).where(Consult.ref == r)))
                  for r in refs]
    clients, tokens = [], []
    for user, ref in zip(requesters, refs, strict=True):
        client = app.test_client()
        assert login(client, user).status_code == 302
        page = client.get(f"/consults/{ref}/book")
        assert page.status_code == 200
        clients.append(client)
        tokens.append(token_of(page))
    db.session.rollback()
    barrier = threading.Barrier(n)
    answers: dict[int, tuple[int, dict]] = {}

    def post(i: int) -> None:
        barrier.wait()
        r = clients[i].post(f"/consults/{refs[i]}/book", data={"slot": slot.starts_at.isoformat()},
                            headers={"Accept": "application/json", "X-CSRFToken": tokens[i]})
        answers[i] = (r.status_code, r.get_json())

    threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert len(answers) == n
    statuses = Counter(status for status, _ in answers.values())
    assert statuses == Counter({200: 1, 409: n - 1}), answers
    [winner] = [i for i, (status, _) in answers.items() if status == 200]
    assert answers[winner][1] == {"ok": True, "redirect": f"/consults/{refs[winner]}"}
    assert all(body == {"error": "conflict", "message":
                        "That time has just been booked for another consult. Choose another time."}
               for status, body in answers.values() if status == 409)
    db.session.rollback()
    [appt] = db.session.scalars(select(Appointment).where(Appointment.specialist_id == specialist_id))
    assert appt.consult.ref == refs[winner] and appt.starts_at == slot.starts_at
    states = dict(db.session.execute(select(Consult.ref, Consult.status)).all())
    assert states == {ref: ConsultStatus.SCHEDULED if i == winner else ConsultStatus.ACCEPTED
                      for i, ref in enumerate(refs)}


@pytest.mark.postgres
def test_postgres_doctors_booking_one_slot_from_the_pages_script_exactly_one_wins(race_pg_app):
    _json_book_race(race_pg_app, HTTP_CLIENTS["postgresql"])


def test_sqlite_doctors_booking_one_slot_from_the_pages_script_exactly_one_wins(race_sqlite_app):
    _json_book_race(race_sqlite_app, HTTP_CLIENTS["sqlite"])


class Holder(threading.Thread):
    """Takes the slot for one consult in a transaction it keeps open until release() (then commits
    or rolls back)."""

    def __init__(self, app: Flask, ref: str, starts_at, *, commit: bool, raw: bool = False) -> None:
        super().__init__(daemon=True)
        self.app, self.ref, self.starts_at, self.commit, self.raw = app, ref, starts_at, commit, raw
        self.holding, self.go = threading.Event(), threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        with self.app.test_request_context():
            try:
                consult = db.session.scalar(select(Consult).where(Consult.ref == self.ref).with_for_update())
                if self.raw:  # another writer of the same block that takes no advisory lock
                    appt = Appointment(consult_id=consult.id, specialist_id=consult.specialist_id,
                                       starts_at=self.starts_at, ends_at=self.starts_at + timedelta(minutes=15),
                                       booked_by_id=consult.requester_id)
                    db.session.add(appt)
                    db.session.flush()
                    db.session.add(BookedBlock(specialist_id=consult.specialist_id,
                                               block_start=self.starts_at, appointment_id=appt.id))
                    db.session.flush()
                else:
                    scheduling.reserve(consult, consult.specialist, self.starts_at, consult.requester)
                self.holding.set()
                self.go.wait(timeout=30)
                if self.commit:
                    db.session.commit()
                else:
                    db.session.rollback()
            except BaseException as exc:
                self.error = exc
                self.holding.set()
            finally:
                db.session.remove()

    def release(self) -> None:
        self.go.set()
        self.join(timeout=30)
        assert self.error is None, self.error


@pytest.mark.postgres
def test_a_loser_is_refused_while_the_winner_still_holds_its_transaction(race_pg_app):
    race_pg_app.config["BOOKING_LOCK_TIMEOUT_MS"] = 60_000  # were it to wait on the winner, it would hang here
    try:
        _, (first, second), slot = _world(2)
        holder = Holder(race_pg_app, first, slot.starts_at, commit=True)
        holder.start()
        assert holder.holding.wait(timeout=30) and holder.error is None
        loser = db.session.scalar(select(Consult).where(Consult.ref == second))
        with pytest.raises(Conflict) as info:
            consults.book(loser.requester, second, slot.starts_at)
        assert "just been booked" in info.value.message
        assert holder.is_alive() and not holder.go.is_set()  # refused before the winner committed
        db.session.rollback()
        holder.release()
    finally:
        race_pg_app.config["BOOKING_LOCK_TIMEOUT_MS"] = 1000
    db.session.expire_all()
    statuses = dict(db.session.execute(select(Consult.ref, Consult.status)).all())
    assert statuses == {first: ConsultStatus.ACCEPTED, second: ConsultStatus.ACCEPTED}  # reserve alone books no state
    assert [a.consult.ref for a in db.session.scalars(select(Appointment))] == [first]


@pytest.mark.postgres
def test_when_the_holder_rolls_back_the_slot_can_be_booked(race_pg_app):
    _, (first, second), slot = _world(2)
    holder = Holder(race_pg_app, first, slot.starts_at, commit=False)
    holder.start()
    assert holder.holding.wait(timeout=30) and holder.error is None
    holder.release()
    other = db.session.scalar(select(Consult).where(Consult.ref == second))
    consults.book(other.requester, second, slot.starts_at)
    db.session.expire_all()
    assert db.session.scalar(select(Consult.status).where(Consult.ref == second)) == ConsultStatus.SCHEDULED


@pytest.mark.postgres
def test_a_block_held_without_the_claim_times_out_into_the_same_refusal(race_pg_app):
    """A writer that takes no advisory lock (none does today) still cannot make a booking wait past
    BOOKING_LOCK_TIMEOUT_MS: the insert's lock wait ends in the "just booked" refusal, not a 500."""
    race_pg_app.config["BOOKING_LOCK_TIMEOUT_MS"] = 200
    try:
        _, (first, second), slot = _world(2)
        holder = Holder(race_pg_app, first, slot.starts_at, commit=False, raw=True)
        holder.start()
        assert holder.holding.wait(timeout=30) and holder.error is None
        other = db.session.scalar(select(Consult).where(Consult.ref == second))
        with pytest.raises(Conflict) as info:
            consults.book(other.requester, second, slot.starts_at)
        assert "just been booked" in info.value.message
        db.session.rollback()
        holder.release()
    finally:
        race_pg_app.config["BOOKING_LOCK_TIMEOUT_MS"] = 1000
    # the holder rolled back: the slot is free again, and a booking's transaction keeps the
    # session's own lock_timeout for what follows the insert
    other = db.session.scalar(select(Consult).where(Consult.ref == second))
    scheduling.reserve(other, other.specialist, slot.starts_at, other.requester)
    assert db.session.scalar(text("SELECT current_setting('lock_timeout')")) == "0"
    db.session.rollback()
