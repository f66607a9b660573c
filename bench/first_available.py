"""First available specialist across a specialty, and one specialist's open slots, at 2,000 specialists.

Run:  .venv/bin/python -m bench.first_available [--specialists 2000] [--days 365] [--queries 120]
                                               [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/huizhen_first_available_bench]
      (a sqlite:///path URL runs the same on SQLite)

Drops and rebuilds the given database with the migrations, then writes the world with bulk inserts
(PostgreSQL COPY, SQLite executemany): `--specialists` approved cardiologists on 40 hospitals (70 % in
Asia/Shanghai, the rest in Asia/Urumqi, Europe/Berlin and America/New_York), each with weekday
morning and afternoon windows and sometimes weekend hours, 10 % with a week of leave and some with
extra hours; 30 % of every specialist's slots over `--days` days are booked (an appointment and its
blocks each). The booking horizon is `--days` days. Then times:

- `first_available` (partner first, and earliest overall) for `--queries` random clocks over the first
  week and random requesters (with and without partner hospitals): p50, p95, max;
- `open_slots` of one specialist for a page of slots (`SLOT_PAGE`) over 14 and over `--days` days,
  and without a limit for comparison.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select, text

from bench.chat_bench import fresh_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/huizhen_first_available_bench"
ZONES = ["Asia/Shanghai"] * 7 + ["Asia/Urumqi", "Europe/Berlin", "America/New_York"]


def _windows(rng: random.Random) -> list[tuple[int, int, int]]:
    rows = []
    for day in range(7):
        if day >= 5 and rng.random() > 0.2:
            continue
        morning = rng.choice([7 * 60, 8 * 60, 8 * 60 + 30, 9 * 60])
        rows.append((day, morning, morning + rng.choice([180, 210, 240])))
        afternoon = rng.choice([13 * 60 + 30, 14 * 60, 14 * 60 + 15])
        rows.append((day, afternoon, afternoon + rng.choice([150, 180, 210])))
    return rows


def _world(specialists: int, days: int, now: datetime, rng: random.Random, url: str) -> dict:
    """Write the world with bulk inserts; returns the facility ids used as requesters' hospitals."""
    from webapp.extensions import db
    from webapp.models import (
        AccountStatus,
        AvailabilityException,
        AvailabilityWindow,
        Consult,
        ConsultStatus,
        Facility,
        FacilityLevel,
        Partnership,
        Role,
        Urgency,
        User,
    )
    from webapp.timefmt import zone

    db.session.execute(insert(Facility), [{"name": f"Hospital {i}", "level": FacilityLevel.TERTIARY_HOSPITAL,
                                           "region": "Gansu"} for i in range(40)])
    db.session.execute(insert(Facility), [{"name": f"County {i}", "level": FacilityLevel.COUNTY_HOSPITAL,
                                           "region": "Gansu"} for i in range(5)])
    hospitals = list(db.session.scalars(select(Facility.id).where(Facility.level == FacilityLevel.TERTIARY_HOSPITAL)))
    counties = list(db.session.scalars(select(Facility.id).where(Facility.level == FacilityLevel.COUNTY_HOSPITAL)))
    # counties 0-2 have two partner hospitals each, 3-4 none
    db.session.execute(insert(Partnership), [{"facility_id": c, "partner_id": hospitals[(3 * i + k) % 40]}
                                             for i, c in enumerate(counties[:3]) for k in range(2)])
    db.session.execute(insert(User), [
        {"email": f"s{i}@bench.example", "password_hash": "x", "full_name": f"Specialist {i}",
         "role": Role.SPECIALIST, "status": AccountStatus.APPROVED, "facility_id": hospitals[i % 40],
         "licence_number": f"S{i:06d}", "timezone": rng.choice(ZONES), "specialty": "cardiology",
         "login_token": f"s{i}"} for i in range(specialists)])
    db.session.execute(insert(User), [
        {"email": f"r{i}@bench.example", "password_hash": "x", "full_name": f"Rural {i}", "role": Role.RURAL_DOCTOR,
         "status": AccountStatus.APPROVED, "facility_id": c, "licence_number": f"R{i:06d}",
         "timezone": "Asia/Shanghai", "login_token": f"r{i}"} for i, c in enumerate(counties)])
    specs = list(db.session.execute(select(User.id, User.timezone).where(User.role == Role.SPECIALIST)
                                    .order_by(User.id)))
    rural = db.session.scalar(select(User.id).where(User.role == Role.RURAL_DOCTOR).limit(1))
    db.session.execute(insert(Consult), [{"specialty": "cardiology", "chief_complaint": "bench", "version": 1,
                                          "requester_id": rural, "submitted_at": now, "status": ConsultStatus.SCHEDULED,
                                          "urgency": Urgency.ROUTINE}])
    consult = db.session.scalar(select(Consult.id))
    windows, exceptions, appointments, blocks = [], [], [], []
    start_day = now.date() - timedelta(days=1)
    for sid, tz_name in specs:
        tz = zone(tz_name)
        mine = _windows(rng)
        windows += [{"specialist_id": sid, "weekday": d, "start_minute": a, "end_minute": b} for d, a, b in mine]
        if rng.random() < 0.1:
            first = start_day + timedelta(days=rng.randrange(0, days))
            exceptions.append({"specialist_id": sid, "kind": "leave", "first_day": first,
                               "last_day": first + timedelta(days=6), "note": ""})
        if rng.random() < 0.2:
            exceptions.append({"specialist_id": sid, "kind": "extra", "first_day": start_day + timedelta(
                days=rng.randrange(0, 14)), "last_day": None, "start_minute": 19 * 60, "end_minute": 21 * 60,
                "note": ""})
            exceptions[-1]["last_day"] = exceptions[-1]["first_day"]
        by_day: dict[int, list[tuple[int, int]]] = {}
        for d, a, b in mine:
            by_day.setdefault(d, []).append((a, b))
        for offset in range(days + 2):
            day: date = start_day + timedelta(days=offset)
            for a, b in by_day.get(day.weekday(), []):
                for minute in range(a, b - 29, 30):
                    if rng.random() < 0.3:
                        starts = (datetime(day.year, day.month, day.day, tzinfo=tz)
                                  + timedelta(minutes=minute)).astimezone(UTC)
                        aid = len(appointments) + 1
                        appointments.append((aid, consult, sid, starts, starts + timedelta(minutes=30), sid))
                        blocks.append((sid, starts, aid))
                        blocks.append((sid, starts + timedelta(minutes=15), aid))
    db.session.execute(insert(AvailabilityWindow), windows)
    leave = [x for x in exceptions if x["kind"] == "leave"]
    extra = [x for x in exceptions if x["kind"] == "extra"]
    if leave:
        db.session.execute(insert(AvailabilityException), leave)
    if extra:
        db.session.execute(insert(AvailabilityException), extra)
    db.session.commit()
    _copy(url, appointments, blocks)
    return {"counties": counties, "specialists": [sid for sid, _ in specs], "appointments": len(appointments),
            "blocks": len(blocks), "windows": len(windows)}


def _existing_world() -> dict:
    """What a previous run built (its clock is the consult's submitted_at)."""
    from sqlalchemy import func

    from webapp.extensions import db
    from webapp.models import Appointment, AvailabilityWindow, BookedBlock, Consult, Facility, FacilityLevel, Role, User

    return {"now": db.session.scalar(select(Consult.submitted_at)),
            "counties": list(db.session.scalars(select(Facility.id).where(
                Facility.level == FacilityLevel.COUNTY_HOSPITAL).order_by(Facility.id))),
            "specialists": list(db.session.scalars(select(User.id).where(User.role == Role.SPECIALIST)
                                                   .order_by(User.id))),
            "appointments": db.session.scalar(select(func.count()).select_from(Appointment)),
            "blocks": db.session.scalar(select(func.count()).select_from(BookedBlock)),
            "windows": db.session.scalar(select(func.count()).select_from(AvailabilityWindow))}


def _copy(url: str, appointments: list[tuple], blocks: list[tuple]) -> None:
    """Bulk-load the appointments and their blocks."""
    from webapp.extensions import db

    if url.startswith("postgresql"):
        raw = db.engine.raw_connection()
        try:
            cursor = raw.driver_connection.cursor()
            # No foreign-key triggers row by row, and the secondary indexes built once after the load
            cursor.execute("SET session_replication_role = replica")
            cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('appointments',"
                           " 'booked_blocks') AND indexname NOT LIKE 'pk_%'")
            indexes = cursor.fetchall()
            for name, _ in indexes:
                cursor.execute(f'DROP INDEX "{name}"')
            with cursor.copy("COPY appointments (id, consult_id, specialist_id, starts_at, ends_at, booked_by_id,"
                             " created_at) FROM STDIN") as copy:
                buffer = io.StringIO()
                for aid, cid, sid, s, e, by in appointments:
                    buffer.write(f"{aid}\t{cid}\t{sid}\t{s.isoformat()}\t{e.isoformat()}\t{by}\t{s.isoformat()}\n")
                copy.write(buffer.getvalue())
            with cursor.copy("COPY booked_blocks (specialist_id, block_start, appointment_id) FROM STDIN") as copy:
                buffer = io.StringIO()
                for sid, s, aid in blocks:
                    buffer.write(f"{sid}\t{s.isoformat()}\t{aid}\n")
                copy.write(buffer.getvalue())
            for _, definition in indexes:
                cursor.execute(definition)
            cursor.execute("SET session_replication_role = DEFAULT")
            cursor.execute("SELECT setval('appointments_id_seq', (SELECT max(id) FROM appointments))")
            raw.commit()
            cursor.execute("ANALYZE")
            raw.commit()
        finally:
            raw.close()
        return
    raw = db.engine.raw_connection()
    try:
        raw.execute("PRAGMA synchronous = OFF")  # a bench world: no fsync per page while loading
        fmt = "%Y-%m-%d %H:%M:%S.%f"
        raw.executemany("INSERT INTO appointments (id, consult_id, specialist_id, starts_at, ends_at, booked_by_id,"
                        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [(aid, cid, sid, s.strftime(fmt), e.strftime(fmt), by, s.strftime(fmt))
                         for aid, cid, sid, s, e, by in appointments])
        raw.executemany("INSERT INTO booked_blocks (specialist_id, block_start, appointment_id) VALUES (?, ?, ?)",
                        [(sid, s.strftime(fmt), aid) for sid, s, aid in blocks])
        raw.commit()
        raw.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def _stats(timings: list[float]) -> str:
    ordered = sorted(timings)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return (f"p50 {statistics.median(ordered):6.1f} ms  p95 {p95:6.1f} ms  max {ordered[-1]:6.1f} ms"
            f"  (n={len(ordered)})")


def _explain(now: datetime, facility: int) -> None:
    """PostgreSQL's plan of the first step of one query (the usual case)."""
    from sqlalchemy import event

    from webapp.extensions import db
    from webapp.scheduling import first_available as fa

    captured = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "generate_series" in statement and not captured:
            captured.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        fa.first_available("cardiology", facility_id=facility, now=now, prefer_partner=False, limit=3)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    statement, parameters = captured[0]
    plan = [row[0] for row in db.session.connection().exec_driver_sql(
        "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, parameters)]
    print("\n-- EXPLAIN ANALYZE, first step of first_available (earliest overall)\n" + "\n".join(plan))
    db.session.rollback()


def main() -> None:
    """Build the world, time first_available and open_slots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specialists", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--queries", type=int, default=120)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--explain", action="store_true", help="print PostgreSQL's plan of one query")
    parser.add_argument("--reuse", action="store_true",
                        help="time the world a previous run left in the database instead of building one")
    args = parser.parse_args()

    from flask_migrate import upgrade

    from config import TestingConfig
    from webapp import create_app
    from webapp.extensions import db
    from webapp.models import User
    from webapp.scheduling import services as scheduling
    from webapp.scheduling.first_available import first_available

    if not args.reuse:
        fresh_database(args.database_url)
    app = create_app(TestingConfig, {"SQLALCHEMY_DATABASE_URI": args.database_url,
                                     "BOOKING_HORIZON_DAYS": args.days})
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    rng = random.Random(15)
    with app.app_context():
        started = time.perf_counter()
        if args.reuse:
            world = _existing_world()
            now = world["now"]
        else:
            upgrade(directory=str(ROOT / "migrations"))
            world = _world(args.specialists, args.days, now, rng, args.database_url)
        dialect = db.engine.dialect.name
        print(f"{dialect}: {len(world['specialists'])} specialists, {world['windows']} weekly windows, {args.days}-day "
              f"horizon, {world['appointments']:,} appointments ({world['blocks']:,} blocks, 30 % of the slots); "
              f"{'reused' if args.reuse else 'built'} in {time.perf_counter() - started:.1f} s; "
              f"load average {os.getloadavg()[0]:.1f}")
        if args.explain and dialect == "postgresql":
            _explain(now + timedelta(hours=5), world["counties"][0])
        from sqlalchemy import event

        statements = []
        event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(1))
        for prefer in (True, False):
            timings, cpu, counts = [], [], []
            for i in range(args.queries + 5):
                clock = now + timedelta(minutes=rng.randrange(0, 7 * 24 * 60), seconds=rng.randrange(60))
                facility = rng.choice(world["counties"])
                statements.clear()
                t, c = time.perf_counter(), time.process_time()
                found = first_available("cardiology", facility_id=facility, now=clock, prefer_partner=prefer, limit=3)
                elapsed, used = (time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000
                db.session.rollback()
                assert len(found) == 3, found
                if i >= 5:  # the first few warm the connection pool and the statement cache
                    timings.append(elapsed)
                    cpu.append(used)
                    counts.append(len(statements))
            label = "partner first   " if prefer else "earliest overall"
            print(f"first_available, {label}, limit 3: {_stats(timings)}; this process's CPU p50 "
                  f"{statistics.median(cpu):.1f} ms; statements per query p50 {statistics.median(counts):.0f}, "
                  f"max {max(counts)}")
        timings = []  # the machine's state in this run: one round trip to the database
        for _ in range(200):
            t = time.perf_counter()
            db.session.execute(text("SELECT 1"))
            timings.append((time.perf_counter() - t) * 1000)
        db.session.rollback()
        print(f"reference, SELECT 1 round trip: {_stats(timings)}; load average {os.getloadavg()[0]:.1f}")
        specialist = db.session.get(User, world["specialists"][0])
        # 14 and --days interleaved call by call, so the machine's drift falls on both alike
        for limit in (20, 100, None):
            timings: dict[int, list[float]] = {14: [], args.days: []}
            sizes = {}
            for _ in range(30):
                for days in (14, args.days):
                    t = time.perf_counter()
                    sizes[days] = len(scheduling.open_slots(specialist, now=now, days=days, limit=limit))
                    timings[days].append((time.perf_counter() - t) * 1000)
                    db.session.rollback()
            for days in (14, args.days):
                print(f"open_slots, {days:3d} days, limit {limit!s:>4}: {sizes[days]:5d} slots, "
                      f"{_stats(timings[days])}")


if __name__ == "__main__":
    main()
