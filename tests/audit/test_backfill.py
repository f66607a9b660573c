"""Migration 0006 gives the entries written before it their place in the hash chain, in id order."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade
from sqlalchemy.exc import DBAPIError

from config import TestingConfig
from tests.conftest import POSTGRES_URL, _reset_schema, postgres_available, require
from webapp import create_app
from webapp.audit.chain import GENESIS, verify
from webapp.audit.services import record_now
from webapp.extensions import db
from webapp.models import AuditEvent
from webapp.models.types import UTCDateTime

MIGRATIONS = str(Path(__file__).resolve().parents[2] / "migrations")

OLD_EVENTS = sa.table(  # audit_events as revision 0004 left it
    "audit_events", sa.column("id", sa.Integer), sa.column("at", UTCDateTime()),
    sa.column("actor_id", sa.Integer), sa.column("actor_email", sa.String), sa.column("action", sa.String),
    sa.column("consult_id", sa.Integer), sa.column("target", sa.String), sa.column("ip", sa.String),
    sa.column("detail", sa.JSON),
)
OLD_ROWS = [  # ids with gaps, times not in id order: the chain follows the ids
    {"id": 3, "at": datetime(2026, 11, 2, 8, 0, 0, 123456, tzinfo=UTC), "action": "auth.login",
     "actor_email": "doctor@test.example", "ip": "192.0.2.7", "detail": {}},
    {"id": 4, "at": datetime(2026, 11, 1, 9, 30, tzinfo=UTC), "action": "auth.login_failed",
     "detail": {"email": "张医生@test.example"}},
    {"id": 9, "at": datetime(2026, 11, 3, 23, 59, 59, 999999, tzinfo=UTC), "action": "consult.viewed",
     "target": "attachment:12", "detail": {"nested": {"b": [1, 2.5, None], "a": True}}},
    {"id": 10, "at": datetime(2026, 11, 4, tzinfo=UTC), "action": "account.approved", "detail": {}},
]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_at_0004(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        url = f"{POSTGRES_URL}_backfill"  # its own database: this test drops every table
        require(postgres_available(url), f"PostgreSQL is not reachable at {url}")
        _reset_schema(url)
    app = create_app(TestingConfig, {"SQLALCHEMY_DATABASE_URI": url, "UPLOAD_DIR": str(tmp_path / "uploads")})
    with app.app_context():
        upgrade(directory=MIGRATIONS, revision="0004")
        with db.engine.begin() as conn:
            for row in OLD_ROWS:
                conn.execute(sa.insert(OLD_EVENTS).values(
                    **{"actor_id": None, "actor_email": None, "consult_id": None, "target": None, "ip": None,
                       **row}))
        yield app
        db.session.remove()
        db.engine.dispose()


def test_the_migration_backfills_the_chain_in_id_order(database_at_0004):
    upgrade(directory=MIGRATIONS)

    rows = db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq)).all()
    assert [(e.id, e.seq) for e in rows] == [(3, 1), (4, 2), (9, 3), (10, 4)]
    assert rows[0].prev_hash == GENESIS
    assert [e.detail for e in rows] == [r["detail"] for r in OLD_ROWS]
    result = verify(db.session)
    assert result.ok, result.problem
    assert (result.entries, result.head_seq, result.head_hash) == (4, 4, rows[-1].hash)

    record_now("auth.logout")  # new entries continue the backfilled chain
    result = verify(db.session)
    assert result.ok and result.entries == 5
    assert db.session.scalar(sa.select(AuditEvent.prev_hash).where(AuditEvent.seq == 5)) == rows[-1].hash

    with pytest.raises(DBAPIError, match="append-only"):  # 0004's protection is back after the backfill
        db.session.execute(sa.update(AuditEvent).values(action="tampered"))
    db.session.rollback()


def test_the_migration_goes_down_and_up_again(database_at_0004):
    upgrade(directory=MIGRATIONS)
    downgrade(directory=MIGRATIONS, revision="0004")
    with db.engine.connect() as conn:
        assert "seq" not in {c["name"] for c in sa.inspect(conn).get_columns("audit_events")}
        assert conn.scalar(sa.select(sa.func.count()).select_from(OLD_EVENTS)) == 4
    upgrade(directory=MIGRATIONS)
    assert verify(db.session).ok
    with pytest.raises(DBAPIError, match="append-only"):
        db.session.execute(sa.update(AuditEvent).values(action="tampered"))
    db.session.rollback()
