"""The delivery worker: `python -m webapp.notifications.worker` (or `flask notifications worker`).

A process of its own, never a web worker: it polls the outbox, delivers what is due by email
and webhook, and sleeps NOTIFY_POLL_SECONDS when nothing is. Each pass first fires the reminders
and missed response targets that are due (`reminders.scan_due`). Several may run on PostgreSQL
(SKIP LOCKED claims); on SQLite run one. SIGTERM/SIGINT finish the delivery under way and stop.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from flask import Flask

log = logging.getLogger("webapp.notifications.worker")


def run(app: Flask, *, once: bool = False, stop: threading.Event | None = None) -> None:
    """Deliver until stopped (or one pass with once=True)."""
    from ..extensions import db
    from ..models import utcnow
    from .delivery import run_once
    from .reminders import scan_due

    stop = stop or threading.Event()
    poll = app.config["NOTIFY_POLL_SECONDS"]
    log.info("notification delivery worker started (batch %s, lease %s s)", app.config["NOTIFY_BATCH"],
             app.config["NOTIFY_LEASE_SECONDS"])
    while not stop.is_set():
        with app.app_context():
            try:
                counts = scan_due(utcnow())  # reminders and missed targets become notifications
                counts |= run_once()
            except Exception:  # the database is down, say: log, wait, try again
                log.exception("delivery pass failed; retrying in %s s", poll)
                counts = {}
            finally:
                db.session.remove()
        if counts:
            log.info("delivered: %s", counts)
        if once:
            return
        if not counts:
            stop.wait(poll)


def main() -> None:
    """Entry point of the worker process."""
    from webapp import create_app

    app = create_app()
    stop = threading.Event()

    def finish(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    run(app, stop=stop)


if __name__ == "__main__":
    main()
