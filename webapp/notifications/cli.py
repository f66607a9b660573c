"""`flask notifications worker`: the delivery worker (same as python -m webapp.notifications.worker)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

notifications_cli = AppGroup("notifications", help="Notification delivery.")


@notifications_cli.command("worker")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
def worker(once: bool) -> None:
    """Deliver the outbox by email and webhook until stopped."""
    from .worker import run

    run(current_app._get_current_object(), once=once)
