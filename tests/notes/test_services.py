"""Notes use cases: merging, validation, persistence, compaction, sign-off, history, access."""

from __future__ import annotations

import base64
import contextlib
import random
from datetime import timedelta

import pytest
from pycrdt import Doc, Map, Text
from sqlalchemy import func, insert, select

from tests.notes.peers import Peer
from webapp.consults import services as consults
from webapp.errors import Forbidden, NotFound, ValidationFailed
from webapp.extensions import db
from webapp.models import AuditEvent, NoteSnapshot, NoteUpdate
from webapp.notes import services
from webapp.notes.services import NotesReadOnly
from webapp.notes.yupdate import read_state_vector


@pytest.fixture
def world(make):
    rural, specialist = make.rural(name="Dr Ma Xiaoli"), make.specialist(name="Dr Zhou Wei")
    consult = make.scheduled(rural, specialist)
    return rural, specialist, consult


def update_count(consult) -> int:
    return db.session.scalar(select(func.count()).select_from(NoteUpdate).where(NoteUpdate.consult_id == consult.id))


def audit_actions(consult) -> list[str]:
    return list(db.session.scalars(select(AuditEvent.action).where(AuditEvent.consult_id == consult.id)
                                   .order_by(AuditEvent.id)))


def pull(peer: Peer, consult) -> None:
    """The peer catches up with the server (the join/sync exchange)."""
    peer.receive(services.sync_step(consult, peer.state()))


def test_concurrent_edits_to_one_section_converge_and_keep_every_edit(world):
    rural, specialist, consult = world
    a, b = Peer("a", seed=1), Peer("b", seed=2)
    rng = random.Random(3)
    for _ in range(400):  # interleaved, each peer editing a stale copy of the same section
        peer, user = (a, rural) if rng.random() < 0.5 else (b, specialist)
        _, update = peer.insert_token("history")
        applied = services.apply_update(user, consult, update)
        assert applied.id is not None and applied.sections == ("history",)
        if rng.random() < 0.2:
            pull(peer, consult)
    pull(a, consult)
    pull(b, consult)
    server = services.text_of(consult)["history"]
    assert a.text() == b.text() == server
    for token in a.tokens + b.tokens:
        assert server.count(token) == 1, token
    assert len(a.tokens) + len(b.tokens) == 400
    assert update_count(consult) == 400


def test_concurrent_deletes_and_inserts_converge(world):
    rural, specialist, consult = world
    a, b = Peer("a", seed=4), Peer("b", seed=5)
    services.apply_update(rural, consult, a.append("plan", "0123456789" * 10))
    pull(b, consult)
    rng = random.Random(6)
    for i in range(200):
        peer, user = (a, rural) if i % 2 else (b, specialist)
        current = peer.text("plan")
        if current and rng.random() < 0.4:
            start = rng.randrange(len(current))
            update = peer.delete("plan", start, min(3, len(current) - start))
        else:
            update = peer.append("plan", f"[{peer.name}{i}]")
        services.apply_update(user, consult, update)
        if rng.random() < 0.3:
            pull(peer, consult)
    pull(a, consult)
    pull(b, consult)
    assert a.text("plan") == b.text("plan") == services.text_of(consult)["plan"]


def test_offline_edits_merge_on_reconnect(world):
    rural, specialist, consult = world
    a, b = Peer("a", seed=7), Peer("b", seed=8)
    for _ in range(10):
        services.apply_update(rural, consult, a.insert_token("findings")[1])
    pull(b, consult)
    offline = [a.insert_token("findings")[0] for _ in range(50)]  # a is offline: nothing is sent
    for _ in range(50):  # b keeps editing online meanwhile
        services.apply_update(specialist, consult, b.insert_token("findings")[1])
    # a reconnects: state vectors are exchanged, each side sends what the other lacks
    diff, server_state = services.sync(consult, a.state())
    a.receive(diff)
    services.apply_update(rural, consult, a.missing_for(server_state))
    pull(b, consult)
    server = services.text_of(consult)["findings"]
    assert a.text("findings") == b.text("findings") == server
    for token in offline + b.tokens:
        assert token in server


def test_repeated_update_is_not_stored_twice(world):
    rural, _, consult = world
    a = Peer("a")
    update = a.append("history", "Exertional chest pain.")
    first = services.apply_update(rural, consult, update)
    again = services.apply_update(rural, consult, update)
    assert first.id is not None and again.duplicate and again.id is None
    assert update_count(consult) == 1
    assert services.text_of(consult)["history"] == "Exertional chest pain."


def _map_update() -> bytes:
    d = Doc()
    d.get("history", type=Map)["x"] = 1
    return d.get_update()


def _foreign_root_update() -> bytes:
    d = Doc()
    d.get("evil", type=Text).insert(0, "hi")
    return d.get_update()


@pytest.mark.parametrize("bad", [
    b"", b"\x00", b"\xff\xff\xff\xff", b"garbage bytes here", bytes(range(256)), b"\x01\x01\x05",
    "a string", 12345, None, ["list"], {"dict": 1},
])
def test_malformed_updates_are_refused_and_change_nothing(world, bad):
    rural, _, consult = world
    services.apply_update(rural, consult, Peer("a").append("history", "kept"))
    with pytest.raises(ValidationFailed):
        services.apply_update(rural, consult, bad)
    assert services.text_of(consult)["history"] == "kept"
    assert update_count(consult) == 1


def test_updates_outside_the_notes_schema_are_refused(world):
    rural, _, consult = world
    for bad in (_map_update(), _foreign_root_update()):
        with pytest.raises(ValidationFailed):
            services.apply_update(rural, consult, bad)
    assert update_count(consult) == 0


def test_random_corruptions_never_crash_or_corrupt(world):
    rural, _, consult = world
    a = Peer("a", seed=9)
    good = [a.insert_token("history")[1] for _ in range(5)]
    services.apply_update(rural, consult, good[0])
    rng = random.Random(10)
    for _ in range(300):
        data = bytearray(rng.choice(good[1:]))
        for _ in range(rng.randint(1, 3)):
            if data and rng.random() < 0.6:
                data[rng.randrange(len(data))] = rng.randrange(256)
            else:
                data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        with contextlib.suppress(ValidationFailed):
            services.apply_update(rural, consult, bytes(data))
    # Whatever was accepted, the persisted document is exactly the live one.
    live = services.text_of(consult)
    services.forget()
    assert services.load_from_database(consult)[0] == live == services.text_of(consult)


def test_an_update_with_missing_dependencies_is_refused(world):
    rural, _, consult = world
    a = Peer("a")
    first = a.append("history", "one ")
    second = a.append("history", "two")  # depends on `first`, which the server has not seen
    with pytest.raises(ValidationFailed, match="sync again"):
        services.apply_update(rural, consult, second)
    assert update_count(consult) == 0
    services.apply_update(rural, consult, first)
    services.apply_update(rural, consult, second)
    assert services.text_of(consult)["history"] == "one two"


# Made by Yjs 13.6.33 (tests/notes/yjs_session.js): "a😀b", then one client deletes only the
# second half of the emoji and another inserts "[" between its halves.
CUT_PAIR = ("AQGvjPOMAgAEAQdoaXN0b3J5BmHwn5iAYgA=", "AAGvjPOMAgECAQ==", "AQGMhvuPDQDEr4zzjAIBr4zzjAICAVsA")


def test_cutting_a_character_in_two_is_refused(world):
    """Yjs shows U+FFFD halves, yrs something else: refused, so browsers and server never diverge."""
    rural, specialist, consult = world
    first, cut_delete, cut_insert = (base64.b64decode(u) for u in CUT_PAIR)
    services.apply_update(rural, consult, first)
    for user, update in ((rural, cut_delete), (specialist, cut_insert)):
        with pytest.raises(ValidationFailed, match="splits a character"):
            services.apply_update(user, consult, update)
    services.forget()  # the index of second halves is rebuilt from the database too
    with pytest.raises(ValidationFailed, match="splits a character"):
        services.apply_update(specialist, consult, cut_insert)
    assert services.text_of(consult)["history"] == "a😀b" and update_count(consult) == 1


def test_size_limits(world, app, monkeypatch):
    rural, _, consult = world
    monkeypatch.setitem(app.config, "NOTES_MAX_UPDATE_BYTES", 1000)
    with pytest.raises(ValidationFailed, match="too large"):
        services.apply_update(rural, consult, Peer("a").append("history", "x" * 2000))
    monkeypatch.setitem(app.config, "NOTES_MAX_UPDATE_BYTES", 64 * 1024)
    monkeypatch.setitem(app.config, "NOTES_MAX_CHARS", 100)
    a = Peer("a")
    services.apply_update(rural, consult, a.append("history", "x" * 60))
    with pytest.raises(ValidationFailed, match="limited to 100"):
        services.apply_update(rural, consult, a.append("plan", "y" * 60))
    assert services.text_of(consult) == {"history": "x" * 60, "findings": "", "assessment": "", "plan": ""}


def test_persisted_document_equals_the_live_one_after_a_restart(world, app, monkeypatch):
    rural, specialist, consult = world
    monkeypatch.setitem(app.config, "NOTES_SNAPSHOT_EVERY", 7)
    a, b = Peer("a", seed=11), Peer("b", seed=12)
    rng = random.Random(13)
    for i in range(60):
        peer, user = (a, rural) if i % 3 else (b, specialist)
        section = rng.choice(services.SECTIONS)
        if i % 5 == 4 and peer.text(section):
            update = peer.delete(section, 0, 1)
        else:
            update = peer.append(section, f"{peer.name}{i} 心电图 ")
        services.apply_update(user, consult, update)
        pull(peer, consult)
    live_text = services.text_of(consult)
    live_state = services.state_vector(consult)
    snapshot = db.session.get(NoteSnapshot, consult.id)
    assert snapshot.upto_update_id > 0, "the document was compacted into a snapshot"
    assert db.session.scalar(select(func.count()).select_from(NoteUpdate).where(
        NoteUpdate.id > snapshot.upto_update_id, NoteUpdate.consult_id == consult.id)) < 7

    services.forget()  # a restart: nothing in memory, only the database
    # (state vectors are compared decoded: the encoding lists clients in hash-map order)
    loaded_text, loaded_state = services.load_from_database(consult)
    assert (loaded_text, read_state_vector(loaded_state)) == (live_text, read_state_vector(live_state))
    assert services.text_of(consult) == live_text
    assert read_state_vector(services.state_vector(consult)) == read_state_vector(live_state)
    fresh = Peer("fresh")
    fresh.receive(services.full_state(consult))
    assert {s: fresh.text(s) for s in services.SECTIONS} == live_text


def test_a_cached_document_catches_up_with_other_workers(world):
    """Another process appended an update: this process's cached document picks it up."""
    rural, _, consult = world
    a = Peer("a")
    services.apply_update(rural, consult, a.append("plan", "Aspirin"))
    assert services.text_of(consult)["plan"] == "Aspirin"  # cached now
    db.session.execute(insert(NoteUpdate).values(consult_id=consult.id, author_id=rural.id,
                                                 update=a.append("plan", " 100 mg"), sections="plan"))
    db.session.commit()
    assert services.text_of(consult)["plan"] == "Aspirin 100 mg"
    services.apply_update(rural, consult, a.append("plan", " daily"))
    assert services.text_of(consult)["plan"] == "Aspirin 100 mg daily"


def sign(specialist, consult):
    return consults.save_recommendation(specialist, consult.ref, consults.RecommendationData(
        assessment="Stable angina", plan="Start aspirin"), sign=True)


def test_sign_off_fixes_the_notes_and_makes_them_read_only(world):
    rural, specialist, consult = world
    a = Peer("a")
    services.apply_update(rural, consult, a.append("history", "Three weeks of chest pain."))
    services.apply_update(specialist, consult, a.append("plan", "Aspirin, statin."))
    sign(specialist, consult)
    signed = services.signed_notes(consult)
    assert signed == {"history": "Three weeks of chest pain.", "findings": "", "assessment": "",
                      "plan": "Aspirin, statin."}
    snapshot = db.session.get(NoteSnapshot, consult.id)
    assert snapshot.signed_at is not None and snapshot.upto_update_id == max(
        db.session.scalars(select(NoteUpdate.id).where(NoteUpdate.consult_id == consult.id)))
    assert "notes.signed" in audit_actions(consult)
    for user in (rural, specialist):
        with pytest.raises(NotesReadOnly):
            services.apply_update(user, consult, a.append("plan", " Changed after signing."))
    assert update_count(consult) == 2
    services.forget()
    assert services.text_of(consult) == signed == services.signed_notes(consult)


def test_cancelled_consult_notes_are_read_only(world):
    rural, _, consult = world
    a = Peer("a")
    services.apply_update(rural, consult, a.append("history", "Note"))
    consults.cancel(rural, consult.ref, "Patient transferred")
    with pytest.raises(NotesReadOnly):
        services.apply_update(rural, consult, a.append("history", " more"))
    assert services.signed_notes(consult) is None
    assert services.text_of(consult)["history"] == "Note"


def test_history_lists_who_changed_what_when(world):
    rural, specialist, consult = world
    a, b = Peer("a"), Peer("b")
    services.apply_update(rural, consult, a.append("history", "Chest pain"))
    services.apply_update(rural, consult, a.append("history", " for 3 weeks."))
    pull(b, consult)
    services.apply_update(specialist, consult, b.append("assessment", "Likely angina"))
    services.apply_update(specialist, consult, b.delete("history", 0, 6))  # "Chest " removed
    pull(a, consult)
    services.apply_update(rural, consult, a.append("plan", "ECG 心电图"))

    revisions = services.history(consult)  # one session per author: they wrote at the same time
    assert [(r.author_name, r.updates) for r in revisions] == [("Dr Ma Xiaoli", 3), ("Dr Zhou Wei", 2)]
    ma, zhou = revisions
    assert list(ma.changes) == ["history", "plan"] and ma.removed == 0
    assert ma.changes["history"].added == len("Chest pain for 3 weeks.")
    assert ma.changes["history"].added_sample == "Chest pain for 3 weeks."
    assert ma.changes["plan"].added == len("ECG 心电图") and ma.changes["plan"].added_sample == "ECG 心电图"
    assert list(zhou.changes) == ["history", "assessment"]
    assert zhou.changes["assessment"].added == len("Likely angina")
    assert zhou.changes["history"].removed == 6 and zhou.changes["history"].removed_sample == "Chest "
    assert ma.started_at <= zhou.started_at <= zhou.ended_at <= ma.ended_at

    ungrouped = services.history(consult, group_seconds=0)
    assert [r.updates for r in ungrouped] == [1, 1, 1, 1, 1]
    assert [r.author_name for r in ungrouped] == ["Dr Ma Xiaoli"] * 2 + ["Dr Zhou Wei"] * 2 + ["Dr Ma Xiaoli"]
    assert services.text_at(consult, ungrouped[1].last_id)["history"] == "Chest pain for 3 weeks."
    assert services.text_at(consult, zhou.last_id) == {
        "history": "pain for 3 weeks.", "findings": "", "assessment": "Likely angina", "plan": ""}

    # A pause longer than the grouping window starts a new session.
    last = db.session.get(NoteUpdate, ma.last_id)
    last.created_at = last.created_at + timedelta(minutes=30)
    db.session.commit()
    assert [(r.author_name, r.updates) for r in services.history(consult)] == [
        ("Dr Ma Xiaoli", 2), ("Dr Zhou Wei", 2), ("Dr Ma Xiaoli", 1)]
    rows = list(db.session.scalars(select(NoteUpdate).order_by(NoteUpdate.id)))
    assert [r.sections for r in rows] == ["history", "history", "assessment", "history", "plan"]
    assert [r.author_id for r in rows] == [rural.id, rural.id, specialist.id, specialist.id, rural.id]


def test_only_parties_and_coordinators_open_the_notes(world, make):
    rural, _, consult = world
    outsider, other_specialist, coordinator = make.rural(), make.specialist(), make.coordinator()
    for user in (outsider, other_specialist):
        with pytest.raises(NotFound):
            services.open_notes(user, consult.ref)
    assert audit_actions(consult).count("notes.access_denied") == 2
    assert services.open_notes(coordinator, consult.ref).id == consult.id
    assert services.open_notes(rural, consult.ref).id == consult.id
    assert audit_actions(consult).count("notes.opened") == 2
    with pytest.raises(Forbidden):
        services.apply_update(coordinator, consult, Peer("c").append("plan", "coordinator text"))
    with pytest.raises(Forbidden):
        services.apply_update(outsider, consult, Peer("o").append("plan", "outsider text"))
    assert update_count(consult) == 0
    with pytest.raises(NotFound):
        services.open_notes(rural, "no-such-ref")
    with pytest.raises(ValidationFailed):
        services.open_notes(rural, None)


def test_notes_open_only_once_a_specialist_accepted(make):
    rural = make.rural()
    consult = make.requested(rural)
    with pytest.raises(NotFound):
        services.open_notes(rural, consult.ref)
    with pytest.raises(Forbidden):
        services.apply_update(rural, consult, Peer("a").append("plan", "too early"))


def test_rate_limit(world, app, monkeypatch):
    rural, _, _ = world
    monkeypatch.setitem(app.config, "NOTES_UPDATES_PER_SECOND", 3)
    services.reset_rate_limits()
    for _ in range(3):
        services.check_rate(rural)
    with pytest.raises(services.TooManyUpdates):
        services.check_rate(rural)
