"""What the database holds, for the fuzz suite: a snapshot to compare, and the rules every row obeys."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, String, Text, select

from webapp.extensions import db
from webapp.validation import DB_INT_MAX, text_problem

# refusals and views are audited: the log (and its chain head) grows
IGNORED = {"audit_events", "audit_chain", "alembic_version"}


def _tables():
    return [t for t in db.metadata.sorted_tables if t.name not in IGNORED]


def snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but the audit log, freshly read."""
    db.session.rollback()
    return {t.name: sorted(map(tuple, db.session.execute(select(t)).all()), key=repr) for t in _tables()}


def changed_tables(before: dict[str, list], after: dict[str, list]) -> list[str]:
    return [name for name in before if before[name] != after.get(name)]


def assert_storable(tables: list[str] | None = None) -> None:
    """Rows hold only what every supported database can hold: text within its column's length,
    without NUL or lone surrogates; integers within PostgreSQL's INTEGER."""
    db.session.rollback()
    for table in _tables():
        if tables is not None and table.name not in tables:
            continue
        for row in db.session.execute(select(table)).mappings():
            for column in table.columns:
                value = row[column.name]
                if value is None:
                    continue
                if isinstance(column.type, (String, Text)) and isinstance(value, str):
                    assert text_problem(value, controls=False) is None, (table.name, column.name, value[:80])
                    length = getattr(column.type, "length", None)
                    assert length is None or len(value) <= length, (table.name, column.name, len(value))
                if isinstance(column.type, Integer) and not isinstance(value, bool):
                    assert -DB_INT_MAX - 1 <= value <= DB_INT_MAX, (table.name, column.name, value)
