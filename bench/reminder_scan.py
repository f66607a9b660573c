"""The cost of the reminder / response-target scan with 10,000 booked consultations and 2,000 open requests.

Run:  .venv/bin/python -m bench.reminder_scan [--booked 10000] [--open 2000] [--runs 20]
                                              [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/huizhen_reminders_bench]

Drops and rebuilds the schema of the given database (by default its own, `huizhen_reminders_bench`)
with the migrations, then writes the world with bulk inserts: 50 specialists, 200 requesters,
`--booked` scheduled consults with an appointment each, spread over the next 60 days (those before
the clock of the run already reminded, as the worker would have left them, plus 10 % cancelled),
and `--open` requested consults of every urgency submitted over the last 3 days (those already past
their target already flagged overdue). The booked blocks are not written (the scan does not read
them). Prints the EXPLAIN (ANALYZE, BUFFERS) plan of each of the scan's three reads, then the
time of `scan_due(now)` when nothing is due (the steady state of every worker pass), median and
max of `--runs`, and of one pass that fires a fresh batch.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select, text

from bench.chat_bench import fresh_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/huizhen_reminders_bench"


def _world(booked: int, open_requests: int, now: datetime, rng: random.Random) -> None:
    from webapp.extensions import db
    from webapp.models import (
        AccountStatus,
        Appointment,
        Consult,
        ConsultStatus,
        Facility,
        FacilityLevel,
        Role,
        Urgency,
        User,
    )
    from webapp.notifications.reminders import target

    facility = Facility(name="Bench County Hospital", level=FacilityLevel.COUNTY_HOSPITAL, region="Gansu")
    db.session.add(facility)
    db.session.flush()
    users = [{"email": f"{role.value}{i}@bench.example", "password_hash": "x", "full_name": f"{role.label} {i}",
              "role": role, "status": AccountStatus.APPROVED, "facility_id": facility.id,
              "licence_number": f"B{role.value[:2]}{i:05d}", "timezone": "Asia/Shanghai",
              "specialty": "cardiology" if role == Role.SPECIALIST else None}
             for role, n in ((Role.SPECIALIST, 50), (Role.RURAL_DOCTOR, 200), (Role.COORDINATOR, 3))
             for i in range(n)]
    db.session.execute(insert(User), users)
    specs = list(db.session.scalars(select(User.id).where(User.role == Role.SPECIALIST)))
    rurals = list(db.session.scalars(select(User.id).where(User.role == Role.RURAL_DOCTOR)))
    case = {"specialty": "cardiology", "chief_complaint": "bench", "version": 1}
    db.session.execute(insert(Consult), [
        {**case, "requester_id": rng.choice(rurals), "specialist_id": specs[i % len(specs)],
         "status": ConsultStatus.SCHEDULED, "urgency": Urgency.ROUTINE,
         "submitted_at": now - timedelta(days=5), "accepted_at": now - timedelta(days=4)}
        for i in range(booked)])
    scheduled = list(db.session.scalars(select(Consult.id).where(Consult.status == ConsultStatus.SCHEDULED)
                                        .order_by(Consult.id)))
    rows = []
    for i, consult_id in enumerate(scheduled):
        starts = now + timedelta(minutes=15 * rng.randrange(-96, 60 * 96))  # from a day ago to 60 days ahead
        past_day, past_soon = starts - timedelta(hours=24) <= now, starts - timedelta(minutes=15) <= now
        rows.append({"consult_id": consult_id, "specialist_id": specs[i % len(specs)], "starts_at": starts,
                     "ends_at": starts + timedelta(minutes=30), "booked_by_id": specs[i % len(specs)],
                     "created_at": starts - timedelta(days=7),
                     "reminded_day_at": starts - timedelta(hours=24) if past_day else None,
                     "reminded_soon_at": starts - timedelta(minutes=15) if past_soon else None,
                     "cancelled_at": now - timedelta(days=1) if i % 10 == 0 else None})
    db.session.execute(insert(Appointment), rows)
    urgencies = [Urgency.EMERGENCY, Urgency.URGENT, Urgency.ROUTINE]
    opened = []
    for i in range(open_requests):
        urgency = urgencies[i % 3]
        submitted = now - timedelta(minutes=rng.randrange(0, 3 * 24 * 60))
        due = submitted + target(urgency)
        opened.append({**case, "requester_id": rng.choice(rurals), "status": ConsultStatus.REQUESTED,
                       "urgency": urgency, "submitted_at": submitted, "overdue_at": due if due <= now else None})
    db.session.execute(insert(Consult), opened)
    db.session.commit()
    db.session.execute(text("ANALYZE"))
    db.session.commit()


def _plans(now: datetime, limit: int) -> None:
    from sqlalchemy.dialects import postgresql

    from webapp.extensions import db
    from webapp.models import Appointment, Consult, ConsultStatus, Urgency
    from webapp.notifications.reminders import REMINDERS, target

    reads = [(kind, select(Appointment.id).where(
        column.is_(None), Appointment.cancelled_at.is_(None), Appointment.starts_at <= now + before,
        Appointment.starts_at > now).order_by(Appointment.starts_at).limit(limit))
        for kind, before, column in REMINDERS]
    reads.append(("request.overdue (urgent; one such read per urgency)", select(Consult.id).where(
        Consult.status == ConsultStatus.REQUESTED, Consult.overdue_at.is_(None), Consult.urgency == Urgency.URGENT,
        Consult.submitted_at <= now - target(Urgency.URGENT)).order_by(Consult.submitted_at).limit(limit)))
    for name, query in reads:
        sql = str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
        plan = db.session.execute(text("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql)).scalars().all()
        print(f"\n-- {name}\n" + "\n".join(plan))
    db.session.rollback()


def main() -> None:
    """Build the world, show the plans, time the scan."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--booked", type=int, default=10_000)
    parser.add_argument("--open", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    args = parser.parse_args()

    from flask_migrate import upgrade

    from config import TestingConfig
    from webapp import create_app
    from webapp.notifications.reminders import scan_due

    fresh_database(args.database_url)
    app = create_app(TestingConfig, {"SQLALCHEMY_DATABASE_URI": args.database_url})
    now = datetime.now(UTC).replace(microsecond=0)
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        started = time.perf_counter()
        _world(args.booked, args.open, now, random.Random(12))
        print(f"world: {args.booked} booked, {args.open} open requests, built in "
              f"{time.perf_counter() - started:.1f} s; load average {os.getloadavg()[0]:.1f}")
        _plans(now, 200)
        timings = []
        for _ in range(args.runs):
            t = time.perf_counter()
            fired = scan_due(now)
            timings.append((time.perf_counter() - t) * 1000)
            assert fired == {}, fired
        print(f"\nscan_due(now), nothing due: median {statistics.median(timings):.2f} ms, "
              f"max {max(timings):.2f} ms over {args.runs} runs")
        # Move the clock 30 minutes: what fell due meanwhile fires (the bench's open requests have no
        # offers, so each overdue one also widens its offers to the 50 specialists: 50 more notifications).
        t = time.perf_counter()
        fired = scan_due(now + timedelta(minutes=30))
        elapsed = (time.perf_counter() - t) * 1000
        print(f"scan_due(now + 30 min): fired {fired} in {elapsed:.0f} ms (notifications and deliveries "
              f"included, one commit per reminder or overdue)")
        t = time.perf_counter()
        again = scan_due(now + timedelta(minutes=30))
        print(f"the same scan again: fired {again} in {(time.perf_counter() - t) * 1000:.1f} ms")

if __name__ == "__main__":
    main()
