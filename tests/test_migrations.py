"""`flask db upgrade` builds the schema from empty, and it matches the models exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from tests.conftest import POSTGRES_URL, _reset_schema, postgres_available, require
from webapp.extensions import db

ROOT = Path(__file__).resolve().parent.parent


def _flask_db(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url, "FLASK_APP": "wsgi.py", "HUIZHEN_ENV": "development"}
    return subprocess.run([sys.executable, "-m", "flask", "db", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _assert_matches_models(url: str) -> None:
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    engine.dispose()
    assert diff == [], f"the migrations and the models differ: {diff}"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    url = f"{POSTGRES_URL}_migrations"  # its own database: this test drops every table
    require(postgres_available(url), f"PostgreSQL is not reachable at {url}")
    _reset_schema(url)
    return url


def test_flask_db_upgrade_builds_the_schema_from_empty(empty_database):
    result = _flask_db(empty_database, "upgrade")
    assert result.returncode == 0, result.stderr
    engine = create_engine(empty_database)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"users", "facilities", "partnerships", "consults", "consult_offers", "attachments",
            "recommendations", "availability_windows", "appointments", "booked_blocks",
            "audit_events", "alembic_version"} <= tables
    _assert_matches_models(empty_database)


def test_downgrade_to_base_and_back(empty_database):
    assert _flask_db(empty_database, "upgrade").returncode == 0
    down = _flask_db(empty_database, "downgrade", "base")
    assert down.returncode == 0, down.stderr
    engine = create_engine(empty_database)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    assert _flask_db(empty_database, "upgrade").returncode == 0
