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


def _insert_people(conn, at: str, roles: tuple[str, ...]) -> None:
    """One facility (id 1) and a user of each role (ids 1, 2, …) written as raw rows of an older schema."""
    from sqlalchemy import text

    conn.execute(text("INSERT INTO facilities (id, name, level, region, created_at) "
                      "VALUES (1, 'County', 'county_hospital', 'Gansu', :t)"), {"t": at})
    for uid, role in enumerate(roles, start=1):
        conn.execute(text(
            "INSERT INTO users (id, email, password_hash, full_name, role, status, languages, licence_number, "
            "timezone, login_token, created_at, facility_id) VALUES (:id, :email, 'x', :name, :role, "
            "'approved', 'zh-CN', :lic, 'Asia/Shanghai', :tok, :t, 1)"),
            {"id": uid, "email": f"u{uid}@test.example", "name": f"User {uid}", "role": role,
             "lic": f"L{uid}", "tok": f"tok{uid}", "t": at})


def test_0014_gives_every_existing_consult_its_participants(empty_database):
    """Consults made before participants existed (at 0013) get their requester, and their accepted
    specialist as the lead, with the times they had; the unique index allows one current row each."""
    from sqlalchemy import text

    assert _flask_db(empty_database, "upgrade", "0013").returncode == 0
    engine = create_engine(empty_database)
    t0, t1 = "2026-11-01 08:00:00+00:00", "2026-11-01 09:30:00+00:00"
    with engine.begin() as conn:
        _insert_people(conn, t0, ("rural_doctor", "specialist", "specialist", "coordinator"))
        rows = [  # id, status, specialist, accepted_at, assigned_by
            (1, "draft", None, None, None), (2, "requested", None, None, None),
            (3, "accepted", 2, t1, None), (4, "scheduled", 3, t1, 4), (5, "completed", 2, t1, None),
            (6, "cancelled", 3, None, None),  # a specialist with no accepted_at: the creation time stands in
        ]
        for cid, status, spec, accepted, assigned in rows:
            conn.execute(text(
                "INSERT INTO consults (id, ref, requester_id, specialist_id, status, urgency, chief_complaint, "
                "history, findings, current_treatment, question, preferred_times, created_at, updated_at, "
                "version, accepted_at, assigned_by_id) VALUES (:id, :ref, 1, :spec, :status, 'routine', 'c', "
                "'', '', '', '', '', :t, :t, 1, :acc, :by)"),
                {"id": cid, "ref": f"ref{cid}", "spec": spec, "status": status, "t": t0, "acc": accepted,
                 "by": assigned})
    upgraded = _flask_db(empty_database, "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    with engine.connect() as conn:
        got = conn.execute(text(
            "SELECT consult_id, user_id, role, added_by_id, accepted_at IS NOT NULL, removed_at IS NULL "
            "FROM consult_participants ORDER BY consult_id, role DESC")).all()
    engine.dispose()
    expected = []
    for cid, _status, spec, _accepted, assigned in rows:
        expected.append((cid, 1, "requester", 1, True, True))
        if spec is not None:
            expected.append((cid, spec, "lead_specialist", assigned or spec, True, True))
    assert [tuple(bool(v) if isinstance(v, int) and i >= 4 else v for i, v in enumerate(r)) for r in got] == expected
    _assert_matches_models(empty_database)


def test_0016_closes_duplicate_open_calls_and_keeps_one_open_call_per_consult(empty_database):
    """Open call records doubled by simultaneous joins before 0016: the newest stays open, the older
    ones end at their own start; afterwards a second open call of the consult is refused."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    assert _flask_db(empty_database, "upgrade", "0015").returncode == 0
    engine = create_engine(empty_database)
    t0 = "2026-11-01 08:00:00+00:00"
    with engine.begin() as conn:
        _insert_people(conn, t0, ("rural_doctor", "specialist"))
        for cid in (1, 2):
            conn.execute(text(
                "INSERT INTO consults (id, ref, requester_id, specialist_id, status, urgency, chief_complaint, "
                "history, findings, current_treatment, question, preferred_times, created_at, updated_at, "
                "version) VALUES (:id, :ref, 1, 2, 'scheduled', 'routine', 'c', '', '', '', '', '', :t, :t, 1)"),
                {"id": cid, "ref": f"ref{cid}", "t": t0})
        for call_id, cid, ended in ((1, 1, None), (2, 1, None), (3, 1, t0), (4, 2, None)):
            conn.execute(text("INSERT INTO call_sessions (id, consult_id, started_by_id, started_at, ended_at, "
                              "audio_only) VALUES (:id, :cid, 1, :t, :ended, false)"),
                         {"id": call_id, "cid": cid, "t": t0, "ended": ended})
    upgraded = _flask_db(empty_database, "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    with engine.connect() as conn:
        open_calls = conn.execute(text(
            "SELECT id FROM call_sessions WHERE ended_at IS NULL ORDER BY id")).scalars().all()
    assert open_calls == [2, 4]
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("INSERT INTO call_sessions (id, consult_id, started_by_id, started_at, audio_only) "
                          "VALUES (5, 1, 1, :t, false)"), {"t": t0})
    engine.dispose()


def test_0018_gives_every_existing_message_its_senders_role(empty_database):
    """Messages stored before 0018 take the role their sender holds (or last held, if removed) in the
    consult; the trainee's question is marked as a trainee's."""
    from sqlalchemy import text

    assert _flask_db(empty_database, "upgrade", "0016").returncode == 0
    engine = create_engine(empty_database)
    t0 = "2026-11-01 08:00:00+00:00"
    with engine.begin() as conn:
        _insert_people(conn, t0, ("rural_doctor", "specialist", "specialist", "rural_doctor"))
        conn.execute(text(
            "INSERT INTO consults (id, ref, requester_id, specialist_id, status, urgency, chief_complaint, "
            "history, findings, current_treatment, question, preferred_times, created_at, updated_at, "
            "version) VALUES (1, 'ref1', 1, 2, 'scheduled', 'routine', 'c', '', '', '', '', '', :t, :t, 1)"),
            {"t": t0})
        for pid, uid, role, removed in ((1, 1, "requester", None), (2, 2, "lead_specialist", None),
                                        (3, 3, "specialist", t0), (4, 4, "trainee", None)):
            conn.execute(text(
                "INSERT INTO consult_participants (id, consult_id, user_id, role, added_by_id, added_at, "
                "accepted_at, removed_at) VALUES (:id, 1, :uid, :role, 1, :t, :t, :removed)"),
                {"id": pid, "uid": uid, "role": role, "t": t0, "removed": removed})
        for seq, uid in enumerate((1, 2, 3, 4), start=1):
            conn.execute(text(
                "INSERT INTO messages (id, consult_id, seq, sender_id, client_id, body, created_at) "
                "VALUES (:seq, 1, :seq, :uid, :cid, 'text', :t)"), {"seq": seq, "uid": uid, "cid": f"c{seq:08d}",
                                                                    "t": t0})
    upgraded = _flask_db(empty_database, "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    with engine.connect() as conn:
        got = conn.execute(text("SELECT sender_id, sender_role FROM messages ORDER BY seq")).all()
    engine.dispose()
    assert [tuple(r) for r in got] == [(1, "requester"), (2, "lead_specialist"), (3, "specialist"), (4, "trainee")]
    _assert_matches_models(empty_database)


def test_0019_adds_signed_opinions_to_existing_consults_and_goes_back(empty_database):
    """A consult made before opinions existed takes one after 0019 (text, author, signing time and
    hash required); downgrading past 0019 drops the table and leaves the consult as it was."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    assert _flask_db(empty_database, "upgrade", "0016").returncode == 0
    engine = create_engine(empty_database)
    t0 = "2026-11-01 08:00:00+00:00"
    with engine.begin() as conn:
        _insert_people(conn, t0, ("rural_doctor", "specialist", "specialist"))
        conn.execute(text(
            "INSERT INTO consults (id, ref, requester_id, specialist_id, status, urgency, chief_complaint, "
            "history, findings, current_treatment, question, preferred_times, created_at, updated_at, "
            "version) VALUES (1, 'ref1', 1, 2, 'completed', 'routine', 'c', '', '', '', '', '', :t, :t, 1)"),
            {"t": t0})
    upgraded = _flask_db(empty_database, "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO consult_opinions (consult_id, author_id, text, signed_at, content_sha256) "
                          "VALUES (1, 3, 'Agree', :t, :h)"), {"t": t0, "h": "a" * 64})
    with pytest.raises(IntegrityError), engine.begin() as conn:  # an unsigned opinion cannot be stored
        conn.execute(text("INSERT INTO consult_opinions (consult_id, author_id, text, signed_at) "
                          "VALUES (1, 3, 'Unsigned', :t)"), {"t": t0})
    with engine.connect() as conn:
        assert conn.execute(text("SELECT consult_id, author_id, text FROM consult_opinions")).all() == [
            (1, 3, "Agree")]
    indexes = {i["name"] for i in inspect(engine).get_indexes("consult_opinions")}
    assert "ix_consult_opinions_consult_id" in indexes
    engine.dispose()
    _assert_matches_models(empty_database)
    down = _flask_db(empty_database, "downgrade", "0018")
    assert down.returncode == 0, down.stderr
    engine = create_engine(empty_database)
    assert "consult_opinions" not in inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM consults")).scalars().all() == ["completed"]
    engine.dispose()


def test_0020_gives_every_existing_consult_its_chat_counter_and_goes_back(empty_database):
    """Consults made before 0020 get a room_counters row (a consult with messages keeps its own);
    downgrading removes only the empty counters 0020 made."""
    from sqlalchemy import text

    assert _flask_db(empty_database, "upgrade", "0019").returncode == 0
    engine = create_engine(empty_database)
    t0 = "2026-11-01 08:00:00+00:00"
    with engine.begin() as conn:
        _insert_people(conn, t0, ("rural_doctor", "specialist"))
        for cid in (1, 2, 3):
            conn.execute(text(
                "INSERT INTO consults (id, ref, requester_id, specialist_id, status, urgency, chief_complaint, "
                "history, findings, current_treatment, question, preferred_times, created_at, updated_at, "
                "version) VALUES (:id, :ref, 1, 2, 'scheduled', 'routine', 'c', '', '', '', '', '', :t, :t, 1)"),
                {"id": cid, "ref": f"ref{cid}", "t": t0})
        conn.execute(text("INSERT INTO room_counters (consult_id, last_seq) VALUES (2, 1)"))
        conn.execute(text("INSERT INTO messages (id, consult_id, seq, sender_id, client_id, body, created_at) "
                          "VALUES (1, 2, 1, 1, 'c00000001', 'text', :t)"), {"t": t0})
    upgraded = _flask_db(empty_database, "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    with engine.connect() as conn:
        got = conn.execute(text("SELECT consult_id, last_seq FROM room_counters ORDER BY consult_id")).all()
    assert [tuple(r) for r in got] == [(1, 0), (2, 1), (3, 0)]
    engine.dispose()
    _assert_matches_models(empty_database)
    down = _flask_db(empty_database, "downgrade", "0019")
    assert down.returncode == 0, down.stderr
    engine = create_engine(empty_database)
    with engine.connect() as conn:
        got = conn.execute(text("SELECT consult_id, last_seq FROM room_counters")).all()
    engine.dispose()
    assert [tuple(r) for r in got] == [(2, 1)]
