"""Audit tests: tampering with the stored log the way someone with the table owner's rights could."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
from sqlalchemy import Connection, Engine, text

from webapp.extensions import db

AUDIT_TABLES = ("audit_events", "audit_chain")


@contextmanager
def tampering(engine: Engine) -> Iterator[Connection]:
    """A transaction on the audit tables with their append-only triggers lifted (raw SQL only)."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:  # DDL is transactional: the triggers come back at commit
            for table in AUDIT_TABLES:
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            yield conn
            for table in AUDIT_TABLES:
                conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
        return
    with engine.begin() as conn:
        triggers = conn.execute(text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN ('audit_events', 'audit_chain')"
        )).all()
        for name, _ in triggers:
            conn.execute(text(f'DROP TRIGGER "{name}"'))
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        with engine.begin() as conn:
            for _, sql in triggers:
                conn.execute(text(sql))


@pytest.fixture
def tamper(app) -> Callable[[], AbstractContextManager[Connection]]:
    """tamper() opens a raw-SQL transaction on the audit tables with the triggers lifted."""

    @contextmanager
    def open_() -> Iterator[Connection]:
        db.session.commit()  # the test's own session holds no snapshot from before the tampering...
        with tampering(db.engine) as conn:
            yield conn
        db.session.commit()  # ...nor one taken inside it (a lazy load), then re-reads everything
        db.session.expire_all()

    return open_
