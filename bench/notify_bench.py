"""Notification delivery benchmark: deliveries per second by the worker to local SMTP and webhook servers.

    .venv/bin/python -m bench.notify_bench --n 500 --workers 1 2

Prepares a fresh PostgreSQL database (migrations, one booked consult through the services), starts
an aiosmtpd server and a webhook HTTP server in this process (both on 127.0.0.1, answering at
once), then for each channel and worker count: starts the delivery workers as their own processes
(`python -m webapp.notifications.worker`, as in production), waits until they poll, commits N
pending deliveries in one transaction (`notify(...)` of `consult.booked`, so each email carries its
.ics invitation) and times from that commit until every delivery is marked sent. It checks that
each delivery arrived exactly once. A bare reference sends the same number of mails (smtplib, a
connection per mail, as `mail.transmit` does) and POSTs (urllib) from one thread, without the
database. Prints one table. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.chat_bench import PG_BASE, prepare

ROOT = Path(__file__).resolve().parent.parent


class Sink:
    """What the local servers received: message ids (SMTP) and delivery keys (webhook)."""

    def __init__(self) -> None:
        self.keys: Counter[str] = Counter()
        self.lock = threading.Lock()

    def add(self, key: str) -> None:
        with self.lock:
            self.keys[key] += 1

    def reset(self) -> None:
        with self.lock:
            self.keys.clear()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd hook
        import email

        message = email.message_from_bytes(envelope.content)
        self.add(str(message["Message-ID"]))
        return "250 Message accepted for delivery"


def start_servers(sink: Sink) -> tuple[Any, ThreadingHTTPServer, str, str]:
    """An aiosmtpd server and a webhook server on loopback: (controller, http server, SMTP_URL, hook URL)."""
    from aiosmtpd.controller import Controller

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            sink.add(self.headers.get("X-Huizhen-Delivery") or self.headers.get("X-Bench-Key") or "")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    import socket

    with socket.socket() as probe:  # aiosmtpd needs a known port (it connects to itself once started)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    http.daemon_threads = True
    threading.Thread(target=http.serve_forever, daemon=True).start()
    return (controller, http, f"smtp://127.0.0.1:{port}",
            f"http://127.0.0.1:{http.server_address[1]}/hook")


def start_workers(count: int, db_url: str, smtp_url: str, hook_url: str, logdir: Path) -> list[subprocess.Popen]:
    """Start `count` delivery workers and wait until each has started polling."""
    env = {**os.environ, "DATABASE_URL": db_url, "HUIZHEN_ENV": "development", "REDIS_URL": "",
           "SMTP_URL": smtp_url, "NOTIFY_WEBHOOK_URL": hook_url, "NOTIFY_WEBHOOK_SECRET": "bench-secret",
           "NOTIFY_POLL_SECONDS": "0.1"}
    procs, logs = [], []
    for i in range(count):
        path = logdir / f"worker{i}.log"
        path.write_bytes(b"")
        with open(path, "ab") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "webapp.notifications.worker"], cwd=ROOT,
                                          env=env, stdout=log, stderr=subprocess.STDOUT))
        logs.append(path)
    deadline = time.monotonic() + 60
    while not all(b"worker started" in p.read_bytes() for p in logs):
        if time.monotonic() > deadline or any(proc.poll() is not None for proc in procs):
            raise RuntimeError(f"a delivery worker did not start; see {logdir}")
        time.sleep(0.1)
    time.sleep(0.5)  # past the first (empty) claim: every worker is polling
    return procs


def stop_workers(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_case(app: Any, ref: str, channel: str, n: int, workers: int, sink: Sink, urls: tuple[str, str],
             db_url: str, logdir: Path) -> dict[str, Any]:
    """Commit n pending deliveries of one channel, let the workers send them; the rate and checks."""
    from sqlalchemy import delete, func, select

    from webapp.extensions import db
    from webapp.models import Consult, Delivery, Notification
    from webapp.notifications.services import notify

    with app.app_context():
        db.session.execute(delete(Delivery))
        db.session.execute(delete(Notification))
        db.session.commit()
    sink.reset()
    procs = start_workers(workers, db_url, *urls, logdir)
    try:
        with app.app_context():
            consult = db.session.scalars(select(Consult).where(Consult.ref == ref)).one()
            for _ in range(n):
                notify([consult.requester], "consult.booked",
                       {"by": "Bench Specialist", "starts_at": "2030-01-01T08:00:00+00:00"}, consult=consult)
            db.session.flush()
            db.session.execute(delete(Delivery).where(Delivery.channel != channel))
            db.session.commit()
            start = time.perf_counter()
            deadline = time.monotonic() + max(120, n)
            while True:
                sent = db.session.scalar(select(func.count()).where(Delivery.status == "sent"))
                db.session.commit()
                if sent >= n or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            elapsed = time.perf_counter() - start
            other = db.session.scalar(select(func.count()).where(Delivery.status != "sent"))
            db.session.remove()
    finally:
        stop_workers(procs)
    with sink.lock:
        received, repeats = len(sink.keys), sum(c - 1 for c in sink.keys.values())
    return {"channel": channel, "workers": workers, "sent": sent, "not_sent": other, "received": received,
            "repeats": repeats, "seconds": elapsed, "rate": sent / elapsed}


def bare(channel: str, n: int, sink: Sink, urls: tuple[str, str]) -> dict[str, Any]:
    """The same number of mails or POSTs sent from one thread without the database (the floor)."""
    sink.reset()
    smtp_url, hook_url = urls
    host, port = smtp_url.removeprefix("smtp://").split(":")
    start = time.perf_counter()
    for i in range(n):
        if channel == "email":
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "bench@huizhen", "to@bench.test", "Bench"
            msg["Message-ID"] = f"<bare-{i}@bench>"
            msg.set_content("Bench mail.\n")
            with smtplib.SMTP(host, int(port), timeout=10) as conn:
                conn.send_message(msg)
        else:
            request = urllib.request.Request(hook_url, data=b'{"bench": true}', method="POST",
                                             headers={"Content-Type": "application/json",
                                                      "X-Bench-Key": f"bare-{i}"})
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
    elapsed = time.perf_counter() - start
    with sink.lock:
        received = len(sink.keys)
    return {"channel": channel, "workers": "bare", "sent": n, "not_sent": 0, "received": received,
            "repeats": 0, "seconds": elapsed, "rate": n / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="pending deliveries per run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to run")
    parser.add_argument("--channels", nargs="+", default=["email", "webhook"], choices=["email", "webhook"])
    parser.add_argument("--database", default="huizhen_ics_bench", help="PostgreSQL database (dropped and recreated)")
    args = parser.parse_args()

    import tempfile

    from config import DevelopmentConfig
    from webapp import create_app

    os.environ["REDIS_URL"] = ""
    db_url = f"{PG_BASE}/{args.database}"
    [(_, ref, _)] = prepare(db_url, 1)
    app = create_app(DevelopmentConfig, {"SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": "",
                                         "NOTIFY_WEBHOOK_URL": "http://127.0.0.1:9/unused"})
    sink = Sink()
    controller, http, smtp_url, hook_url = start_servers(sink)
    urls = (smtp_url, hook_url)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="notify_bench") as tmp:
        for channel in args.channels:
            rows.append(bare(channel, args.n, sink, urls))
            for workers in args.workers:
                rows.append(run_case(app, ref, channel, args.n, workers, sink, urls, db_url, Path(tmp)))
    controller.stop()
    http.shutdown()
    load_after = os.getloadavg()
    print(f"notify_bench  n={args.n}  PostgreSQL {args.database}  cpus={os.cpu_count()}  "
          f"load avg before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(f"{'channel':<8} {'workers':>7} {'sent':>5} {'unsent':>6} {'received':>8} {'repeats':>7} "
          f"{'seconds':>8} {'per s':>8}")
    for r in rows:
        print(f"{r['channel']:<8} {r['workers']!s:>7} {r['sent']:>5} {r['not_sent']:>6} {r['received']:>8} "
              f"{r['repeats']:>7} {r['seconds']:>8.2f} {r['rate']:>8.1f}")
    if any(r["received"] != args.n or r["repeats"] or r["not_sent"] for r in rows):
        sys.exit("some deliveries were lost or repeated")


if __name__ == "__main__":
    main()
