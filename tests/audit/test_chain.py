"""The audit hash chain: a normal history verifies, every kind of tampering is found and named."""

from __future__ import annotations

from itertools import pairwise
from types import SimpleNamespace

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from webapp.audit.chain import GENESIS, HASHED, current_head, entry_hash, hash_of, verify
from webapp.audit.services import record, record_now
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import AuditEvent


def chain() -> list[AuditEvent]:
    return list(db.session.scalars(
        select(AuditEvent).order_by(AuditEvent.seq).execution_options(populate_existing=True)))


def snapshot(entry: AuditEvent) -> SimpleNamespace:
    """An entry's stored values, still readable after the row is tampered with."""
    return SimpleNamespace(id=entry.id, hash=entry.hash, **{name: getattr(entry, name) for name in HASHED})


@pytest.fixture
def history(make) -> list[SimpleNamespace]:
    """A normal history written by the services: registrations, a consult's life, views, logins."""
    doctor = make.rural()
    specialist = make.specialist()
    consult = make.accepted(doctor, specialist)
    consults.view_consult(doctor, consult.ref)
    record_now("auth.login", actor=doctor, detail={"via": "form", "attempt": 1})
    record_now("auth.login_failed", detail={"email": "ghost@test.example"})
    record_now("attachment.viewed", actor=specialist, consult=consult, target="attachment:3")
    rows = chain()
    assert len(rows) >= 7
    return [snapshot(e) for e in rows]


def test_a_normal_history_verifies(history):
    result = verify(db.session)
    assert result.ok, result.problem
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert history[0].prev_hash == GENESIS
    assert all(e.prev_hash == before.hash for before, e in pairwise(history))
    assert all(e.hash == hash_of(e) for e in history)
    head = current_head(db.session)
    assert (result.entries, result.head_seq, result.head_hash) == (len(history), head.seq, head.hash)
    assert (head.seq, head.hash) == (history[-1].seq, history[-1].hash)


def test_entries_of_one_transaction_are_chained_in_order_and_rolled_back_ones_leave_no_gap(history):
    record("test.first")
    record("test.second", detail={"k": (1, 2)})  # a tuple reads back as a list: hashed as stored
    db.session.commit()
    record("test.discarded")
    db.session.rollback()
    record_now("test.after_rollback")
    rows = chain()
    assert [e.action for e in rows[-3:]] == ["test.first", "test.second", "test.after_rollback"]
    assert [e.seq for e in rows] == list(range(1, len(rows) + 1))
    assert rows[-2].detail == {"k": [1, 2]}
    assert verify(db.session).ok


def test_the_hash_covers_every_field(history):
    entry = history[3]
    fields = {name: getattr(entry, name) for name in (
        "seq", "at", "actor_id", "actor_email", "action", "consult_id", "target", "ip", "detail",
        "prev_hash")}
    assert set(fields) == set(HASHED)
    assert entry_hash(**fields) == entry.hash
    for name, other in [("seq", 99), ("actor_id", 12345), ("actor_email", "x@y.z"), ("action", "x"),
                        ("consult_id", 777), ("target", "user:1"), ("ip", "10.0.0.9"),
                        ("detail", {"forged": True}), ("prev_hash", "f" * 64),
                        ("at", entry.at.replace(microsecond=(entry.at.microsecond + 1) % 1_000_000))]:
        assert entry_hash(**{**fields, name: other}) != entry.hash, name


# --- tampering with raw SQL -------------------------------------------------------------------------


def problem_of() -> tuple[int | None, int | None, str]:
    result = verify(db.session)
    assert not result.ok, "verify missed the tampering"
    return result.problem.seq, result.problem.id, result.problem.reason


def test_an_edited_entry_is_named(history, tamper):
    victim = history[4]
    with tamper() as conn:
        conn.execute(text("UPDATE audit_events SET actor_email = 'someone@else.example' WHERE id = :id"),
                     {"id": victim.id})
    assert problem_of() == (victim.seq, victim.id, "its content does not match its hash (edited)")


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(history, tamper):
    victim, after = history[4], history[5]
    forged = entry_hash(seq=victim.seq, at=victim.at, actor_id=victim.actor_id, actor_email=victim.actor_email,
                        action="consult.nothing_happened", consult_id=victim.consult_id, target=victim.target,
                        ip=victim.ip, detail=victim.detail, prev_hash=victim.prev_hash)
    with tamper() as conn:
        conn.execute(text("UPDATE audit_events SET action = 'consult.nothing_happened', hash = :h WHERE id = :id"),
                     {"h": forged, "id": victim.id})
    seq, id_, reason = problem_of()
    assert (seq, id_) == (after.seq, after.id)
    assert "does not follow the entry before it" in reason


def test_a_deleted_entry_in_the_middle_is_named(history, tamper):
    victim, after = history[3], history[4]
    with tamper() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": victim.id})
    assert problem_of() == (after.seq, after.id, f"entry {victim.seq} before it are missing (deleted)")


def test_deleted_last_entries_are_found_through_the_chain_head(history, tamper):
    last_two = [e.id for e in history[-2:]]
    with tamper() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE id IN (:a, :b)"), {"a": last_two[0], "b": last_two[1]})
    seq, id_, reason = problem_of()
    assert (seq, id_) == (None, None)
    assert reason == (f"is at seq {len(history)} but the log ends at seq {len(history) - 2}: "
                      "the last 2 entries were deleted")


def test_deleting_every_entry_is_found(history, tamper):
    with tamper() as conn:
        conn.execute(text("DELETE FROM audit_events"))
    assert "the last" in problem_of()[2]


def test_an_inserted_entry_is_named_even_when_correctly_chained(history, tamper):
    last = history[-1]
    at = last.at
    forged = entry_hash(seq=last.seq + 1, at=at, actor_id=None, actor_email=None, action="auth.login",
                        consult_id=None, target=None, ip=None, detail={}, prev_hash=last.hash)
    with tamper() as conn:
        conn.execute(text(
            "INSERT INTO audit_events (at, action, detail, seq, prev_hash, hash) "
            "VALUES (:at, 'auth.login', '{}', :seq, :prev, :hash)"),
            {"at": at if conn.dialect.name == "postgresql" else at.replace(tzinfo=None),
             "seq": last.seq + 1, "prev": last.hash, "hash": forged})
    seq, id_, reason = problem_of()
    assert seq == last.seq + 1 and id_ is not None
    assert reason == f"comes after the chain head (seq {last.seq}): inserted"


def test_an_entry_inserted_in_the_middle_is_named(history, tamper):
    """Room is made by renumbering the later entries; the first renumbered one no longer matches."""
    spot = history[2]
    with tamper() as conn:
        for e in reversed(history[2:]):  # one by one, from the end: seq stays unique
            conn.execute(text("UPDATE audit_events SET seq = seq + 1 WHERE id = :id"), {"id": e.id})
        conn.execute(text("UPDATE audit_chain SET seq = seq + 1"))
        conn.execute(text(
            "INSERT INTO audit_events (at, action, detail, seq, prev_hash, hash) "
            "SELECT at, 'consult.viewed', '{}', :seq, prev_hash, hash FROM audit_events WHERE id = :id"),
            {"seq": spot.seq, "id": spot.id})
    inserted = db.session.scalar(select(AuditEvent.id).where(AuditEvent.seq == spot.seq))
    assert problem_of() == (spot.seq, inserted, "its content does not match its hash (edited)")


def test_swapped_entries_are_named(history, tamper):
    a, b = history[3], history[4]
    with tamper() as conn:
        conn.execute(text("UPDATE audit_events SET seq = -1 WHERE id = :id"), {"id": a.id})
        conn.execute(text("UPDATE audit_events SET seq = :s WHERE id = :id"), {"s": a.seq, "id": b.id})
        conn.execute(text("UPDATE audit_events SET seq = :s WHERE id = :id"), {"s": b.seq, "id": a.id})
    seq, id_, reason = problem_of()
    assert (seq, id_) == (a.seq, b.id)  # b now sits at a's place
    assert "does not follow the entry before it" in reason


def test_swapped_contents_are_named(history, tamper):
    a, b = history[3], history[4]
    with tamper() as conn:
        conn.execute(text("UPDATE audit_events SET action = :x WHERE id = :id"), {"x": b.action, "id": a.id})
        conn.execute(text("UPDATE audit_events SET action = :x WHERE id = :id"), {"x": a.action, "id": b.id})
    assert a.action != b.action
    assert problem_of() == (a.seq, a.id, "its content does not match its hash (edited)")


def test_a_rewritten_head_hides_deleted_entries_only_from_a_check_without_an_anchor(history, tamper):
    """The documented limit: rewriting both the tail and the head is only caught by an external anchor."""
    anchor = (current_head(db.session).seq, current_head(db.session).hash)
    kept = history[-3]
    with tamper() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq > :s"), {"s": kept.seq})
        conn.execute(text("UPDATE audit_chain SET seq = :s, hash = :h"), {"s": kept.seq, "h": kept.hash})
    assert verify(db.session).ok
    result = verify(db.session, anchors=[anchor])
    assert not result.ok
    assert (result.problem.seq, result.problem.id) == (anchor[0], None)
    assert "does not match the external anchor" in result.problem.reason


def test_the_database_refuses_to_move_the_head_backwards(history):
    db.session.commit()
    with pytest.raises(DBAPIError, match="only moves forward"):
        db.session.execute(text("UPDATE audit_chain SET seq = seq - 1"))
    db.session.rollback()
    assert verify(db.session).ok


def test_a_missing_head_with_entries_refuses_new_entries_and_fails_verify(history, tamper):
    with tamper() as conn:
        conn.execute(text("DELETE FROM audit_chain"))
    assert problem_of() == (None, None, "missing, but the log has entries")
    record("auth.login")
    with pytest.raises(RuntimeError, match="chain head is missing"):
        db.session.commit()
    db.session.rollback()


# --- the CLI ---------------------------------------------------------------------------------------


def test_flask_audit_verify_and_head(app, history, tamper):
    runner = app.test_cli_runner()
    head = runner.invoke(args=["audit", "head"])
    assert head.exit_code == 0
    anchor = head.output.strip()
    assert anchor == f"{history[-1].seq}:{history[-1].hash}"

    ok = runner.invoke(args=["audit", "verify", "--anchor", anchor])
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith(f"OK: {len(history)} audit entries, chain intact; head {anchor}")

    victim = history[2]
    with tamper() as conn:
        conn.execute(text("UPDATE audit_events SET detail = '{\"forged\": true}' WHERE id = :id"), {"id": victim.id})
    failed = runner.invoke(args=["audit", "verify"])
    assert failed.exit_code == 1
    assert (f"FAILED after 2 good entries: entry seq={victim.seq} (id={victim.id}): "
            "its content does not match its hash (edited)") in failed.output

    bad = runner.invoke(args=["audit", "verify", "--anchor", "12:nothex"])
    assert bad.exit_code == 2 and "is not SEQ:HASH" in bad.output


def test_flask_audit_head_on_an_empty_log(app):
    result = app.test_cli_runner().invoke(args=["audit", "head"])
    assert result.exit_code == 1 and "no head yet" in result.output
    assert app.test_cli_runner().invoke(args=["audit", "verify"]).exit_code == 0
