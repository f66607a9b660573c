"""Fixtures for the notification tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from webapp.extensions import db
from webapp.models import Delivery, Notification


class CommitFailed(RuntimeError):
    """The database refused the commit (raised by the failing_commit fixture)."""


@pytest.fixture
def failing_commit() -> Iterator:
    """A context manager: the next COMMIT inside it fails, as a database failure would."""
    import contextlib

    @contextlib.contextmanager
    def failing():
        def refuse(session: Session) -> None:
            raise CommitFailed("commit refused by the test")

        event.listen(Session, "before_commit", refuse)
        try:
            yield
        finally:
            event.remove(Session, "before_commit", refuse)
            db.session.rollback()

    return failing


def notifications_of(user, kind: str | None = None) -> list[Notification]:
    """The stored notifications of a user (of one kind), oldest first."""
    query = select(Notification).where(Notification.user_id == user.id).order_by(Notification.id)
    if kind is not None:
        query = query.where(Notification.kind == kind)
    return list(db.session.scalars(query))


def counts() -> tuple[int, int]:
    """How many notifications and deliveries are stored."""
    return (db.session.scalar(select(func.count(Notification.id))),
            db.session.scalar(select(func.count(Delivery.id))))
