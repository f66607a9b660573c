"""The least-privilege PostgreSQL role (deploy/postgres-roles.sql, deploy/postgres-grants.sql).

The roles are created in this test's own database with a random suffix (role names are
cluster-wide) and dropped at the end; the migrations run as the owner, the application runs as
the app role, which can append to the audit log but not change, remove, truncate or unprotect it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine, func, make_url, select, text
from sqlalchemy.exc import DBAPIError

from tests.conftest import POSTGRES_URL, Factory, _reset_schema, build_app, postgres_available, require
from webapp import hotdb
from webapp.audit.chain import verify
from webapp.audit.services import record, record_now
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import AuditEvent

pytestmark = pytest.mark.postgres
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
URL = f"{POSTGRES_URL}_roles"  # its own database: this test drops the schema and creates roles


@dataclass
class Roles:
    owner: str
    app: str
    owner_url: str
    app_url: str


def deploy_sql(name: str, roles: Roles) -> str:
    """A deploy/ script with the role names replaced by this test's unique ones."""
    sql = (DEPLOY / name).read_text()
    return re.sub(r"\bhuizhen_(owner|app)\b", lambda m: roles.owner if m.group(1) == "owner" else roles.app, sql)


def run_sql(url: str, sql: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.connection.driver_connection.execute(sql)  # as psql would: no placeholders
    finally:
        engine.dispose()


def _as(url: str, user: str) -> str:
    return make_url(url).set(username=user).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def roles(tmp_path_factory) -> Iterator[Roles]:
    require(postgres_available(URL), f"PostgreSQL is not reachable at {URL}")
    suffix = secrets.token_hex(4)
    owner, app = f"huizhen_owner_{suffix}", f"huizhen_app_{suffix}"
    roles = Roles(owner, app, _as(URL, owner), _as(URL, app))
    _reset_schema(URL)
    try:
        run_sql(URL, deploy_sql("postgres-roles.sql", roles))  # as the superuser
        yield roles
    finally:
        for role in (app, owner):
            run_sql(URL, f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
                         f'DROP OWNED BY "{role}" CASCADE; DROP ROLE "{role}"; END IF; END $$')
        run_sql(URL, "CREATE SCHEMA IF NOT EXISTS public")


def _dispose(app: Flask) -> None:
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    hotdb.dispose(app)  # the chat's autocommit pool holds connections of the role too


@pytest.fixture(scope="module")
def owner_app(roles, tmp_path_factory) -> Iterator[Flask]:
    """The migrations run as the owner, then the grants script (as the owner too)."""
    app = build_app(roles.owner_url, tmp_path_factory.mktemp("owner-files"), reset_schema=False)
    run_sql(roles.owner_url, deploy_sql("postgres-grants.sql", roles))
    yield app
    _dispose(app)


@pytest.fixture(scope="module")
def app_role_app(owner_app, roles, tmp_path_factory) -> Iterator[Flask]:
    """Huizhen with DATABASE_URL = the app role (the migrations are already at head)."""
    app = build_app(roles.app_url, tmp_path_factory.mktemp("app-files"), reset_schema=False)
    yield app
    _dispose(app)


@pytest.fixture
def as_app(app_role_app) -> Iterator[Flask]:
    with app_role_app.app_context():
        yield app_role_app
        db.session.remove()


def test_the_app_role_is_who_the_app_connects_as(as_app, roles):
    assert db.session.scalar(text("SELECT current_user")) == roles.app
    owners = set(db.session.scalars(text("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")))
    assert owners == {roles.owner}


def test_the_app_role_writes_audit_rows_and_runs_a_consult_flow(as_app):
    make = Factory(counter=secrets.randbelow(10**6) * 1000)  # the tables are never emptied here
    doctor = make.rural()
    specialist = make.specialist()
    consult = make.scheduled(doctor, specialist)
    consults.view_consult(specialist, consult.ref)
    consults.cancel(doctor, consult.ref, "Patient recovered")
    record("test.one")
    record("test.two", detail={"n": 2})
    db.session.commit()
    record_now("auth.login", actor=doctor)

    actions = db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)).all()
    assert {"consult.created", "consult.submitted", "consult.accepted",
            "consult.viewed", "consult.cancelled", "test.one", "test.two", "auth.login"} <= set(actions)
    result = verify(db.session)
    assert result.ok, result.problem
    assert result.entries == len(actions) == result.head_seq


FORBIDDEN = [
    # (statement, what PostgreSQL says)
    ("UPDATE audit_events SET action = 'tampered'", "permission denied"),
    ("DELETE FROM audit_events", "permission denied"),
    ("DELETE FROM audit_events WHERE seq = (SELECT max(seq) FROM audit_events)", "permission denied"),
    ("TRUNCATE audit_events", "permission denied"),
    ("ALTER TABLE audit_events DISABLE TRIGGER ALL", "must be owner"),
    ("ALTER TABLE audit_events DISABLE TRIGGER USER", "must be owner"),
    ("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_change", "must be owner"),
    ("ALTER TABLE audit_events ADD COLUMN note text", "must be owner"),
    ("ALTER TABLE audit_events RENAME TO audit_events_old", "must be owner"),
    ("DROP TRIGGER audit_events_no_change ON audit_events", "must be owner"),
    ("DROP TABLE audit_events", "must be owner"),
    ("CREATE TRIGGER t BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
     "permission denied"),
    ("SET session_replication_role = replica", "permission denied"),
    ("TRUNCATE audit_chain", "permission denied"),
    ("DELETE FROM audit_chain", "permission denied"),
    ("UPDATE audit_chain SET id = 2", "permission denied"),
    ("UPDATE audit_chain SET seq = 0", "only moves forward"),
    ("ALTER TABLE audit_chain DISABLE TRIGGER ALL", "must be owner"),
    ("DROP TABLE audit_chain", "must be owner"),
    ("UPDATE alembic_version SET version_num = '0001'", "permission denied"),
    ("CREATE TABLE audit_events_copy (id int)", "permission denied"),
]


@pytest.mark.parametrize("statement,refusal", FORBIDDEN, ids=[s for s, _ in FORBIDDEN])
def test_the_app_role_cannot_change_or_unprotect_the_audit_log(as_app, roles, statement, refusal):
    make = Factory(counter=secrets.randbelow(10**6) * 1000)  # the tables are never emptied here
    make.rural()  # a few audit entries to protect
    record_now("auth.login")
    before = db.session.scalars(select(AuditEvent.hash).order_by(AuditEvent.seq)).all()
    db.session.commit()

    engine = create_engine(roles.app_url)
    try:
        with engine.connect() as conn, pytest.raises(DBAPIError, match=refusal):
            conn.execute(text(statement))
    finally:
        engine.dispose()

    assert db.session.scalars(select(AuditEvent.hash).order_by(AuditEvent.seq)).all() == before
    assert verify(db.session).ok


def test_the_owner_could_do_it_so_the_refusals_are_the_roles_doing(owner_app, roles):
    engine = create_engine(roles.owner_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
            conn.execute(text("DELETE FROM audit_events"))
            assert conn.scalar(select(func.count()).select_from(AuditEvent)) == 0
            conn.rollback()  # only shown, not done
    finally:
        engine.dispose()
