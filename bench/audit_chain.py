"""The cost of the audit hash chain: 20 concurrent writers on PostgreSQL, chained vs unchained.

Run:  .venv/bin/python -m bench.audit_chain [--writers 20] [--transactions 100] [--work-ms 0 5] [--processes]
                                            [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/huizhen_auditchain_bench]

Drops and rebuilds the schema of the given database (by default its own, `huizhen_auditchain_bench`)
with the migrations. Then, for each mode, `--writers` threads of one process (or, with
`--processes`, that many processes, like several gunicorn workers), one connection each, released
together, each run `--transactions` transactions that write one audit entry and commit, optionally
after `--work-ms` of other work inside the transaction (a `pg_sleep`, standing in for the
use case's own statements). Modes, measured side by side in one run:

- `unchained`: the same ORM insert of an AuditEvent, with seq from a plain sequence and no chain
  (prev_hash is the genesis hash): the reference without the chain's lock and head UPDATE.
- `chained`: Huizhen's `audit.services.record` + commit: the entry is sealed at commit under the
  chain-head row lock (UPDATE … RETURNING, INSERT, UPDATE head, COMMIT).
- `chained, lock taken early`: the same, but the transaction locks the head row
  (SELECT … FOR UPDATE) at its start, as a lock taken at `record()` time would: shows what taking
  the lock late saves when a transaction does other work.

Prints transactions per second and commit latency percentiles (ms) per mode.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, text

from bench.chat_bench import fresh_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/huizhen_auditchain_bench"


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * (len(ordered) - 1) + 0.5))]


def _transactions(app, mode: str, i: int, transactions: int, work_ms: float, start) -> list[float]:
    """One writer: `transactions` transactions of the given mode; their latencies in ms."""
    from webapp.audit.chain import GENESIS, hash_of
    from webapp.audit.services import record
    from webapp.extensions import db
    from webapp.models import AuditEvent, utcnow

    def one(n: int) -> float:
        t0 = time.perf_counter()
        if mode == "chained, lock taken early":
            db.session.execute(text("SELECT seq FROM audit_chain WHERE id = 1 FOR UPDATE"))
        if work_ms:
            db.session.execute(text("SELECT pg_sleep(:s)"), {"s": work_ms / 1000})
        if mode == "unchained":
            entry = AuditEvent(at=utcnow(), action="bench.write", detail={"writer": i, "n": n},
                               seq=0, prev_hash=GENESIS)
            entry.hash = hash_of(entry)
            entry.seq = func.nextval("bench_unchained_seq")
            db.session.add(entry)
        else:
            record("bench.write", detail={"writer": i, "n": n})
        db.session.commit()
        return (time.perf_counter() - t0) * 1000

    with app.app_context():
        try:
            one(-1)  # warm-up, not measured: connection, statement compilation
            start.wait()
            latencies = [one(n) for n in range(transactions)]
        finally:
            db.session.remove()
    return latencies


def _app(url: str, pool_size: int):
    from config import TestingConfig
    from webapp import create_app

    return create_app(TestingConfig, {"SQLALCHEMY_DATABASE_URI": url,
                                      "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": pool_size, "max_overflow": 0}})


def _process_writer(url: str, mode: str, i: int, transactions: int, work_ms: float, start, results) -> None:
    try:
        results.put(_transactions(_app(url, 1), mode, i, transactions, work_ms, start))
    except BaseException as exc:
        results.put(exc)
        raise


def run_mode(app, url: str, mode: str, writers: int, transactions: int, work_ms: float,
             processes: bool) -> dict[str, float]:
    """Run one mode with `writers` threads (one process) or processes; throughput and latencies."""
    latencies: list[float] = []
    if processes:
        ctx = multiprocessing.get_context("spawn")
        start, results = ctx.Barrier(writers + 1), ctx.Queue()
        procs = [ctx.Process(target=_process_writer, args=(url, mode, i, transactions, work_ms, start, results))
                 for i in range(writers)]
        for p in procs:
            p.start()
        start.wait()
        started = time.perf_counter()
        outcomes = [results.get(timeout=600) for _ in procs]
        elapsed = time.perf_counter() - started
        for p in procs:
            p.join()
    else:
        start = threading.Barrier(writers + 1)
        outcomes = []
        lock = threading.Lock()

        def writer(i: int) -> None:
            try:
                result = _transactions(app, mode, i, transactions, work_ms, start)
            except BaseException as exc:
                result = exc
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        start.wait()
        started = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        latencies.extend(outcome)
    return {"tx/s": len(latencies) / elapsed, "p50": statistics.median(latencies),
            "p90": _percentile(latencies, 0.90), "p99": _percentile(latencies, 0.99), "n": len(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=20)
    parser.add_argument("--transactions", type=int, default=100, help="per writer and mode")
    parser.add_argument("--work-ms", type=float, nargs="*", default=[0.0, 5.0],
                        help="other work inside each transaction; one table per value")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--processes", action="store_true",
                        help="one process per writer (like several gunicorn workers) instead of threads")
    args = parser.parse_args()

    from flask_migrate import upgrade

    from webapp.audit.chain import verify
    from webapp.extensions import db

    fresh_database(args.database_url)
    app = _app(args.database_url, args.writers + 2)
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        db.session.execute(text("CREATE SEQUENCE bench_unchained_seq START 1000000000"))
        db.session.commit()

    print(f"# audit chain bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{args.writers} writer {'processes' if args.processes else 'threads'} x {args.transactions} "
          "transactions per mode")
    modes = ["unchained", "chained", "chained, lock taken early"]
    for work_ms in args.work_ms:
        print(f"\nother work in each transaction: {work_ms:g} ms")
        print(f"| {'mode':<27} | {'tx/s':>7} | {'p50 ms':>7} | {'p90 ms':>7} | {'p99 ms':>7} |")
        print(f"|{'-' * 29}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
        for mode in modes:
            r = run_mode(app, args.database_url, mode, args.writers, args.transactions, work_ms, args.processes)
            print(f"| {mode:<27} | {r['tx/s']:7.0f} | {r['p50']:7.1f} | {r['p90']:7.1f} | {r['p99']:7.1f} |")
    with app.app_context():
        # the unchained reference rows (seq >= 1e9) are removed, as the superuser, before the real check
        db.session.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        db.session.execute(text("DELETE FROM audit_events WHERE seq >= 1000000000"))
        db.session.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
        db.session.commit()
        result = verify(db.session)
        print(f"\nflask audit verify on the {result.entries} chained entries: "
              f"{'OK' if result.ok else f'FAILED: {result.problem}'}")
        db.engine.dispose()


if __name__ == "__main__":
    main()
