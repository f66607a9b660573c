"""Consult-room chat use cases: sequencing, idempotency, validation, permissions, limits, receipts."""

from __future__ import annotations

import io
import os
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
import redis
from PIL import Image
from sqlalchemy import delete, func, select, update

from tests.conftest import require
from webapp.auth import services as accounts
from webapp.auth import sessions
from webapp.consults import services as consults
from webapp.errors import Forbidden, NotFound, ValidationFailed
from webapp.extensions import db
from webapp.models import (
    AccountStatus,
    AuditEvent,
    ConsultStatus,
    Message,
    ReadReceipt,
    RoomCounter,
    UserSession,
    utcnow,
)
from webapp.rooms import services, state, throttle
from webapp.rooms.services import TooManyMessages, enter_room, mark_read, messages_after, post_message

pytestmark = pytest.mark.usefixtures("generous_chat")


@pytest.fixture
def pair(make):
    rural, specialist = make.rural(), make.specialist()
    return rural, specialist, make.scheduled(rural, specialist)


def png_bytes(color=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(out, "PNG")
    return out.getvalue()


def audit_actions(consult, action: str) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(
        AuditEvent.consult_id == consult.id, AuditEvent.action == action)))


# --- sequence numbers --------------------------------------------------------------------------


def test_sequence_numbers_run_1_to_n_per_consult_and_are_independent(make, pair):
    rural, specialist, first = pair
    second = make.scheduled(rural, specialist)
    seqs_first, seqs_second = [], []
    for i in range(6):
        sender = rural if i % 2 == 0 else specialist
        seqs_first.append(post_message(sender, first, f"first-{i:04d}", f"hello {i}").message.seq)
        if i < 3:
            seqs_second.append(post_message(sender, second, f"second-{i:04d}", f"other {i}").message.seq)
    assert seqs_first == [1, 2, 3, 4, 5, 6]
    assert seqs_second == [1, 2, 3]
    stored = db.session.scalars(select(Message.seq).where(Message.consult_id == first.id)
                                .order_by(Message.id)).all()
    assert stored == [1, 2, 3, 4, 5, 6]


def test_a_posted_message_is_committed_with_its_fields(pair):
    rural, _, consult = pair
    posted = post_message(rural, consult, "client-0001", "  BP 150/95, HR 88  ")
    assert posted.created is True
    db.session.expire_all()  # read back what the database holds, not the identity map
    stored = db.session.get(Message, posted.message.id)
    assert (stored.seq, stored.sender_id, stored.client_id, stored.body) == (1, rural.id, "client-0001",
                                                                           "BP 150/95, HR 88")
    wire = services.to_wire(stored)
    assert wire["id"] == stored.id and wire["seq"] == 1 and wire["sender_name"] == rural.full_name
    assert "attachment" not in wire


# --- idempotency ---------------------------------------------------------------------------------


def test_a_repeated_client_id_returns_the_original_message(pair):
    rural, _, consult = pair
    first = post_message(rural, consult, "retry-abc-123", "first text")
    again = post_message(rural, consult, "retry-abc-123", "first text")
    changed = post_message(rural, consult, "retry-abc-123", "a different body is still the same send")
    assert first.created is True
    assert again.created is False and changed.created is False
    assert again.message.id == first.message.id == changed.message.id
    assert changed.message.body == "first text"
    assert db.session.scalar(select(func.count()).select_from(Message)) == 1
    # the retry did not burn a sequence number
    assert post_message(rural, consult, "retry-abc-124", "next").message.seq == 2


def test_client_ids_are_scoped_to_the_sender(pair):
    rural, specialist, consult = pair
    a = post_message(rural, consult, "same-client-id", "from rural")
    b = post_message(specialist, consult, "same-client-id", "from specialist")
    assert a.created and b.created and a.message.id != b.message.id
    assert (a.message.seq, b.message.seq) == (1, 2)


def test_a_retry_after_the_consult_closed_still_returns_the_stored_message(pair):
    rural, _, consult = pair
    original = post_message(rural, consult, "before-close-1", "sent just before cancelling")
    consults.cancel(rural, consult.ref, "patient transferred")
    retry = post_message(rural, consult, "before-close-1", "sent just before cancelling")
    assert retry.created is False and retry.message.id == original.message.id


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("client_id", [None, "", "short", "x" * 65, "has space 123", "semi;colon99",
                                       "<script>", 12345678, ["abcdefgh"], "ünicode-id-1"])
def test_client_id_must_be_8_to_64_safe_characters(pair, client_id):
    rural, _, consult = pair
    with pytest.raises(ValidationFailed):
        post_message(rural, consult, client_id, "hello")
    assert db.session.scalar(select(func.count()).select_from(Message)) == 0


@pytest.mark.parametrize("client_id", ["abcdefgh", "A" * 64, "0f8c2a1e-5b7d-4c3e-9f00-123456789abc", "a_b-c_d-"])
def test_valid_client_ids_are_accepted(pair, client_id):
    rural, _, consult = pair
    assert post_message(rural, consult, client_id, "hello").created


@pytest.mark.parametrize("body", [None, "", "   ", "\n\t "])
def test_an_empty_message_without_attachment_is_refused(pair, body):
    rural, _, consult = pair
    with pytest.raises(ValidationFailed, match="empty"):
        post_message(rural, consult, "empty-body-1", body)


@pytest.mark.parametrize("body", [123, 1.5, True, ["hi"], {"text": "hi"}, b"bytes"])
def test_a_non_string_body_is_refused(pair, body):
    rural, _, consult = pair
    with pytest.raises(ValidationFailed, match="string"):
        post_message(rural, consult, "typed-body-1", body)


def test_message_length_is_limited_by_chat_max_chars(app, pair, monkeypatch):
    rural, _, consult = pair
    monkeypatch.setitem(app.config, "CHAT_MAX_CHARS", 50)
    assert post_message(rural, consult, "exactly-limit", "x" * 50).created
    assert post_message(rural, consult, "padded-limit", "  " + "y" * 50 + "  ").created  # trimmed first
    with pytest.raises(ValidationFailed, match="50 characters"):
        post_message(rural, consult, "over-the-limit", "z" * 51)
    assert db.session.scalar(select(func.count()).select_from(Message)) == 2


def test_the_default_limit_refuses_a_very_long_message(app, pair):
    rural, _, consult = pair
    limit = app.config["CHAT_MAX_CHARS"]
    with pytest.raises(ValidationFailed):
        post_message(rural, consult, "huge-message", "x" * (limit + 1))


@pytest.mark.parametrize("attachment_id", ["1", 1.0, True, [1], {"id": 1}])
def test_attachment_id_must_be_an_integer(pair, attachment_id):
    rural, _, consult = pair
    with pytest.raises(ValidationFailed, match="attachment_id"):
        post_message(rural, consult, "attach-type-1", "see file", attachment_id)


def test_an_attachment_of_this_consult_can_be_sent_alone(app, pair):
    rural, _, consult = pair
    item = consults.add_attachment(rural, consult.ref, io.BytesIO(png_bytes()), "ecg.png")
    posted = post_message(rural, consult, "with-attach-1", "", item.id)
    assert posted.created and posted.message.attachment_id == item.id and posted.message.body == ""
    with app.test_request_context():  # the attachment URL is built like in a handler
        wire = services.to_wire(posted.message)
    assert wire["attachment"]["id"] == item.id
    assert wire["attachment"]["content_type"] == "image/png"
    assert wire["attachment"]["url"] == f"/consults/{consult.ref}/attachments/{item.id}"


def test_an_attachment_of_another_consult_or_a_missing_one_is_refused(make, pair):
    rural, specialist, consult = pair
    other_rural = make.rural()
    other = make.scheduled(other_rural, specialist)
    foreign = consults.add_attachment(other_rural, other.ref, io.BytesIO(png_bytes()), "theirs.png")
    with pytest.raises(ValidationFailed, match="does not belong"):
        post_message(rural, consult, "foreign-attach", "look", foreign.id)
    with pytest.raises(ValidationFailed, match="does not belong"):
        post_message(rural, consult, "missing-attach", "look", foreign.id + 1000)
    assert db.session.scalar(select(func.count()).select_from(Message)) == 0


# --- permissions ---------------------------------------------------------------------------------


def test_a_non_party_cannot_post(make, pair):
    _, _, consult = pair
    stranger_rural, stranger_specialist = make.rural(), make.specialist()
    for user in (stranger_rural, stranger_specialist):
        with pytest.raises(Forbidden):
            post_message(user, consult, "stranger-0001", "let me in")
    assert db.session.scalar(select(func.count()).select_from(Message)) == 0


def test_a_coordinator_may_enter_but_not_post(make, pair):
    _, _, consult = pair
    coordinator = make.coordinator()
    assert enter_room(coordinator, consult.ref).id == consult.id
    assert len(audit_actions(consult, "room.entered")) == 1
    with pytest.raises(Forbidden):
        post_message(coordinator, consult, "coordinator-1", "hello")


def test_a_closed_consult_is_read_only(pair):
    rural, specialist, consult = pair
    post_message(rural, consult, "before-cancel", "last words")
    consults.cancel(rural, consult.ref, "patient transferred")
    assert consult.status == ConsultStatus.CANCELLED
    for sender in (rural, specialist):
        with pytest.raises(Forbidden, match="read-only"):
            post_message(sender, consult, "after-cancel-" + str(sender.id).zfill(3), "too late")
    # the history stays readable by the parties
    assert enter_room(specialist, consult.ref).id == consult.id
    assert [m.body for m in messages_after(consult, 0)] == ["last words"]


def test_enter_room_refusal_is_audited_and_looks_like_not_found(make, pair):
    _, _, consult = pair
    stranger = make.rural()
    with pytest.raises(NotFound):
        enter_room(stranger, consult.ref)
    denied = audit_actions(consult, "room.access_denied")
    assert [(e.actor_id, e.consult_id) for e in denied] == [(stranger.id, consult.id)]
    assert audit_actions(consult, "room.entered") == []
    # a missing consult looks the same as a forbidden one
    with pytest.raises(NotFound) as missing:
        enter_room(stranger, "NOPE-0000")
    with pytest.raises(NotFound) as forbidden:
        enter_room(stranger, consult.ref)
    assert missing.value.message == forbidden.value.message


def test_enter_room_is_refused_before_a_specialist_accepted(make):
    rural = make.rural()
    requested = make.requested(rural)
    with pytest.raises(NotFound):
        enter_room(rural, requested.ref)
    assert len(audit_actions(requested, "room.access_denied")) == 1


@pytest.mark.parametrize("ref", [None, "", 12, ["x"], "x" * 33])
def test_enter_room_validates_the_reference(make, ref):
    with pytest.raises(ValidationFailed):
        enter_room(make.rural(), ref)


def test_parties_entering_are_audited_and_member_checks_are_not(pair):
    rural, specialist, consult = pair
    enter_room(rural, consult.ref)
    enter_room(specialist, consult.ref)
    services.member_consult(rural, consult.ref)
    entered = audit_actions(consult, "room.entered")
    assert sorted(e.actor_id for e in entered) == sorted([rural.id, specialist.id])


# --- rate limit ----------------------------------------------------------------------------------


def test_too_many_messages_per_second_are_refused(app, pair, monkeypatch):
    rural, specialist, consult = pair
    monkeypatch.setitem(app.config, "CHAT_MESSAGES_PER_SECOND", 3)
    state.reset(app)  # a fresh moving window, whatever earlier tests sent
    for i in range(3):
        post_message(rural, consult, f"burst-{i:05d}", f"burst {i}")
    with pytest.raises(TooManyMessages) as refused:
        post_message(rural, consult, "burst-00003", "one too many")
    assert refused.value.status == 429 and refused.value.code == "rate_limited"
    # the refused message is not stored and did not take a sequence number
    assert db.session.scalar(select(func.count()).select_from(Message)) == 3
    # the limit is per user: the other party can still write
    assert post_message(specialist, consult, "other-user-1", "I can still write").message.seq == 4
    # an idempotent retry of a stored message is not throttled (it costs nothing)
    assert post_message(rural, consult, "burst-00000", "burst 0").created is False


def test_the_rate_limiter_being_down_does_not_lose_messages(app, pair, monkeypatch):
    rural, _, consult = pair

    class Broken:
        def hit(self, *a, **kw):
            raise ConnectionError("redis is down")

    monkeypatch.setattr(throttle, "chat_limiter", lambda: Broken())
    assert post_message(rural, consult, "limiter-down-1", "still stored").created


# --- backfill ------------------------------------------------------------------------------------


def test_messages_after_returns_the_rest_in_order(make, pair):
    rural, specialist, consult = pair
    other = make.scheduled(rural, specialist)
    for i in range(1, 8):
        post_message(rural if i % 3 else specialist, consult, f"msg-{i:06d}", f"m{i}")
        post_message(rural, other, f"oth-{i:06d}", f"o{i}")
    assert [m.seq for m in messages_after(consult, 0)] == [1, 2, 3, 4, 5, 6, 7]
    assert [m.seq for m in messages_after(consult, None)] == [1, 2, 3, 4, 5, 6, 7]
    assert [m.body for m in messages_after(consult, 4)] == ["m5", "m6", "m7"]
    assert messages_after(consult, 7) == []
    assert messages_after(consult, 1000) == []
    assert [m.seq for m in messages_after(consult, 2, limit=3)] == [3, 4, 5]
    assert {m.consult_id for m in messages_after(other, 0)} == {other.id}


@pytest.mark.parametrize("after_seq", [-1, "3", 2.5, True, [1], {"seq": 1}])
def test_messages_after_validates_after_seq(pair, after_seq):
    _, _, consult = pair
    with pytest.raises(ValidationFailed):
        messages_after(consult, after_seq)


# --- history pages -------------------------------------------------------------------------------


def seqs_of(messages) -> list[int]:
    return [m.seq for m in messages]


@pytest.fixture
def small_pages(app, monkeypatch):
    monkeypatch.setitem(app.config, "CHAT_PAGE_SIZE", 10)


@pytest.mark.usefixtures("small_pages")
def test_the_latest_page_is_the_newest_messages_oldest_first_and_says_older_exist(make, pair):
    rural, specialist, consult = pair
    other = make.scheduled(rural, specialist)
    make.chat_history(consult, 25)
    make.chat_history(other, 3)
    latest = services.latest_messages(consult)
    assert seqs_of(latest.messages) == list(range(16, 26)) and latest.more is True
    assert [m.body for m in latest.messages][-1] == "history 25"
    assert {m.consult_id for m in latest.messages} == {consult.id}
    assert seqs_of(services.latest_messages(consult, limit=4).messages) == [22, 23, 24, 25]
    assert seqs_of(services.latest_messages(consult, limit=1000).messages) == list(range(16, 26))  # capped
    small = services.latest_messages(other)
    assert seqs_of(small.messages) == [1, 2, 3] and small.more is False
    assert services.last_seq(consult) == 25 and services.last_seq(other) == 3


@pytest.mark.usefixtures("small_pages")
def test_pages_before_a_sequence_walk_back_to_the_very_first_message(make, pair):
    _, _, consult = pair
    assert make.chat_history(consult, 25) == list(range(1, 26))
    pages, before = [], 16
    while True:
        page = services.messages_before(consult, before)
        pages.append(seqs_of(page.messages))
        if not page.more:
            break
        before = page.messages[0].seq
    assert pages == [list(range(6, 16)), [1, 2, 3, 4, 5]]
    # boundaries: exactly one page left, nothing before the first, a sequence beyond the end
    assert (seqs_of(services.messages_before(consult, 11).messages), services.messages_before(consult, 11).more) == (
        list(range(1, 11)), False)
    first = services.messages_before(consult, 2)
    assert (seqs_of(first.messages), first.more) == ([1], False)
    assert services.messages_before(consult, 1).messages == [] and services.messages_before(consult, 1).more is False
    assert services.messages_before(consult, 0).messages == []
    beyond = services.messages_before(consult, 10_000)
    assert seqs_of(beyond.messages) == list(range(16, 26)) and beyond.more is True


@pytest.mark.usefixtures("small_pages")
def test_pages_after_a_sequence_walk_forward_to_the_newest_with_a_more_flag(make, pair):
    _, _, consult = pair
    make.chat_history(consult, 25)
    pages, after = [], 0
    while True:
        page = services.messages_page_after(consult, after)
        pages.append(seqs_of(page.messages))
        if not page.more:
            break
        after = page.messages[-1].seq
    assert pages == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    exact = services.messages_page_after(consult, 15)
    assert seqs_of(exact.messages) == list(range(16, 26)) and exact.more is False  # exactly one page left
    assert services.messages_page_after(consult, 25) == services.Page([], False)
    assert services.messages_page_after(consult, 2**31 - 1) == services.Page([], False)
    assert seqs_of(messages_after(consult, 0)) == list(range(1, 11))  # one page at most, never all of it


@pytest.mark.usefixtures("small_pages")
def test_join_backlog_is_the_latest_page_first_and_the_page_after_a_sequence_on_reconnect(make, pair):
    _, _, consult = pair
    make.chat_history(consult, 25)
    for first in (0, None):
        fresh = services.join_backlog(consult, first)
        assert (seqs_of(fresh.messages), fresh.has_more, fresh.more, fresh.last_seq) == (
            list(range(16, 26)), True, False, 25)
    back = services.join_backlog(consult, 3)
    assert (seqs_of(back.messages), back.has_more, back.more, back.last_seq) == (list(range(4, 14)), True, True, 25)
    done = services.join_backlog(consult, 25)
    assert (done.messages, done.has_more, done.more, done.last_seq) == ([], True, False, 25)


def test_an_empty_room_has_no_pages(pair):
    _, _, consult = pair
    assert services.latest_messages(consult) == services.Page([], False)
    assert services.messages_before(consult, 5) == services.Page([], False)
    assert services.messages_page_after(consult, 0) == services.Page([], False)
    assert services.last_seq(consult) == 0
    empty = services.join_backlog(consult, 0)
    assert (empty.messages, empty.has_more, empty.more, empty.last_seq) == ([], False, False, 0)
    stale = services.join_backlog(consult, 7)  # a client that saw more than the room holds
    assert (stale.messages, stale.has_more, stale.more, stale.last_seq) == ([], False, False, 0)


@pytest.mark.parametrize("seq", [-1, 2**31, 10**30, "3", 2.5, True, [1], {"seq": 1}])
def test_page_sequence_numbers_are_validated(pair, seq):
    _, _, consult = pair
    for read in (services.messages_before, services.messages_page_after, services.join_backlog):
        with pytest.raises(ValidationFailed):
            read(consult, seq)
    with pytest.raises(ValidationFailed):
        services.messages_before(consult, None)  # paging back needs a starting point


# --- read receipts -------------------------------------------------------------------------------


def test_mark_read_only_moves_forward(pair):
    rural, specialist, consult = pair
    for i in range(5):
        post_message(rural, consult, f"read-{i:05d}", f"r{i}")
    assert mark_read(specialist, consult, 3) == 3
    assert mark_read(specialist, consult, 1) == 3  # going back is ignored
    assert mark_read(specialist, consult, 5) == 5
    assert mark_read(rural, consult, 0) == 0
    assert services.read_receipts(consult) == {specialist.id: 5, rural.id: 0}
    db.session.expire_all()
    assert db.session.get(ReadReceipt, (consult.id, specialist.id)).last_read_seq == 5


def test_a_receipt_never_runs_ahead_of_the_last_message(pair):
    rural, specialist, consult = pair
    assert mark_read(specialist, consult, 10**9) == 0  # nothing sent yet
    post_message(rural, consult, "only-one-1", "hello")
    assert mark_read(specialist, consult, 10**9) == 1
    # so a later message is not shown as already seen
    post_message(rural, consult, "only-one-2", "are you there?")
    assert services.read_receipts(consult) == {specialist.id: 1}


def test_only_the_parties_send_read_receipts(make, pair):
    rural, _, consult = pair
    post_message(rural, consult, "for-coord-1", "hello")
    for outsider in (make.coordinator(), make.specialist()):
        with pytest.raises(Forbidden):
            mark_read(outsider, consult, 1)
    assert services.read_receipts(consult) == {}
    assert db.session.scalar(select(func.count()).select_from(ReadReceipt)) == 0


@pytest.mark.parametrize("seq", [None, -1, "2", 1.5, False, [3]])
def test_mark_read_validates_seq(pair, seq):
    _, specialist, consult = pair
    with pytest.raises(ValidationFailed):
        mark_read(specialist, consult, seq)
    assert services.read_receipts(consult) == {}


# --- concurrency ---------------------------------------------------------------------------------


def run_concurrently(app, work: Callable[[int], None], threads_n: int) -> None:
    """Run work(0) … work(n-1) at once, each in its own thread and app context; any error fails."""
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def guarded(t: int) -> None:
        with app.app_context():
            try:
                barrier.wait(timeout=30)
                work(t)
            except BaseException as exc:  # any error is a defect
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=guarded, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a poster hung"
    assert errors == [], errors


def test_concurrent_posts_get_unique_gap_free_sequence_numbers(app, pair, database_url):
    """Two parties on several connections at once: every message gets its own seq, none skipped.

    SQLite serialises writers (busy_timeout); PostgreSQL is where the counter row lock matters.
    """
    require(database_url not in ("sqlite://", "sqlite:///:memory:"),
            "concurrent sessions need a file or server database, not in-memory SQLite")
    rural, specialist, consult = pair
    rural_id, specialist_id, consult_id = rural.id, specialist.id, consult.id
    threads_n, per_thread = 8, 5
    created: Counter = Counter()
    lock = threading.Lock()

    def work(t: int) -> None:
        from webapp.models import Consult, User

        sender = db.session.get(User, rural_id if t % 2 == 0 else specialist_id)
        room = db.session.get(Consult, consult_id)
        for i in range(per_thread):
            posted = post_message(sender, room, f"t{t:02d}-m{i:03d}-x", f"thread {t} message {i}")
            # every thread also retries its first message once: never a duplicate
            if i == 0:
                assert post_message(sender, room, f"t{t:02d}-m000-x", "again").created is False
            with lock:
                created[posted.created] += 1

    run_concurrently(app, work, threads_n)
    total = threads_n * per_thread
    assert created == Counter({True: total})
    db.session.rollback()  # end this session's snapshot to see what the threads committed
    rows = db.session.execute(select(Message.seq, Message.client_id).where(Message.consult_id == consult_id)
                              .order_by(Message.seq)).all()
    assert [seq for seq, _ in rows] == list(range(1, total + 1))
    assert len({cid for _, cid in rows}) == total
    # each thread's own messages kept their order
    for t in range(threads_n):
        mine = [seq for seq, cid in rows if cid.startswith(f"t{t:02d}-")]
        assert mine == sorted(mine) and len(mine) == per_thread


# --- the fast path (the chat's hot path: guarded Core statements, no ORM loads) ---------------


def sender_of(user, consult, token: str | None = None) -> services.Sender:
    user_id, name, consult_id = user.id, user.full_name, consult.id  # read before start() commits
    return services.Sender(user_id, token or sessions.start(user), name, consult_id)


def counter_of(consult) -> int | None:
    db.session.rollback()
    return db.session.scalar(select(RoomCounter.last_seq).where(RoomCounter.consult_id == consult.id))


def test_a_new_consult_comes_with_its_chat_counter_and_its_first_message_is_fast(make, pair):
    rural, _specialist, consult = pair
    assert counter_of(make.draft(rural)) == 0  # made in the transaction that creates the consult
    assert counter_of(consult) == 0
    fast = services.post_message_fast(sender_of(rural, consult), "fast-0001", "first of the room")
    assert fast.wire is not None and fast.wire["seq"] == 1 and counter_of(consult) == 1


def test_the_fast_path_stores_the_next_message_as_post_message_would(pair):
    rural, specialist, consult = pair
    post_message(rural, consult, "slow-0001", "first")  # the first message creates the counter
    fast = services.post_message_fast(sender_of(specialist, consult), "fast-0001", "  second  ")
    assert fast.wire is not None and fast.rate_charged is True
    assert (fast.wire["seq"], fast.wire["body"], fast.wire["sender_name"]) == (2, "second", specialist.full_name)
    db.session.rollback()
    stored = db.session.get(Message, fast.wire["id"])
    assert (stored.seq, stored.sender_id, stored.client_id, stored.body) == (2, specialist.id, "fast-0001", "second")
    assert fast.wire == services.to_wire(stored)  # the same wire form as the full path
    assert counter_of(consult) == 2


@pytest.mark.parametrize("case", ["retried", "stale_token", "signed_out", "idle", "someone_elses_session",
                                  "suspended", "not_a_party", "closed", "no_counter_yet"])
def test_the_fast_path_stores_nothing_and_takes_no_number_when_it_cannot_prove_the_send(make, pair, case):
    """Each of these is for post_message to answer; the fast path's UPDATE is rolled back."""
    rural, specialist, consult = pair
    post_message(rural, consult, "slow-0001", "first")
    user, token, client_id = rural, None, "fast-0002"
    if case == "retried":
        client_id = "slow-0001"
    elif case == "stale_token":  # a session key the server never issued
        token = "a-token-that-is-no-longer-current"
    elif case == "signed_out":  # the session was ended (sign-out on another device)
        token = sessions.start(rural)
        accounts.end_sessions(rural, "logout")
    elif case == "idle":  # the session went idle: judged in the same statement
        token = sessions.start(rural)
        db.session.execute(update(UserSession).values(last_seen_at=utcnow() - timedelta(hours=2)))
        db.session.commit()
    elif case == "someone_elses_session":  # a live session, but of another user
        token = sessions.start(specialist)
    elif case == "suspended":
        rural.status = AccountStatus.SUSPENDED
        db.session.commit()
    elif case == "not_a_party":
        user = make.specialist()
    elif case == "closed":
        consults.cancel(rural, consult.ref, "transferred")
    elif case == "no_counter_yet":  # a consult from before migration 0020 that never had a message
        consult = make.scheduled(rural, specialist)
        db.session.execute(delete(RoomCounter).where(RoomCounter.consult_id == consult.id))
        db.session.commit()
    before = counter_of(consult)
    fast = services.post_message_fast(sender_of(user, consult, token), client_id, "hello")
    assert fast.wire is None and fast.rate_charged is True
    assert counter_of(consult) == before
    assert db.session.scalar(select(func.count()).select_from(Message).where(Message.consult_id == consult.id)) \
        == (0 if case == "no_counter_yet" else 1)
    if case in ("retried", "no_counter_yet"):  # the full path then answers without a gap
        posted = post_message(rural, consult, client_id, "hello", rate_charged=True)
        assert posted.message.seq == 1 and posted.created is (case == "no_counter_yet")
        if case == "retried":
            assert post_message(rural, consult, "fast-0003", "next").message.seq == 2


def test_send_message_takes_the_fast_path_and_asks_for_the_user_and_consult_only_when_it_cannot(app, pair,
                                                                                               monkeypatch):
    rural, _, consult = pair
    monkeypatch.setitem(app.config, "CHAT_MESSAGES_PER_SECOND", 2)
    resolved: list[str] = []

    def resolve():
        resolved.append("full path")
        return rural, consult

    # the counter row came with the consult: the room's very first message is fast too
    first = services.send_message(sender_of(rural, consult), resolve, "send-0001", "first")
    assert (first.wire["seq"], first.consult_id, first.created, resolved) == (1, consult.id, True, [])
    second = services.send_message(sender_of(rural, consult), resolve, "send-0002", "second")
    assert (second.wire["seq"], second.created, resolved) == (2, True, [])  # fast: no load
    # each message counted once: the limit of 2 per second is reached, not passed
    with pytest.raises(TooManyMessages):
        services.send_message(sender_of(rural, consult), resolve, "send-0003", "third")
    retry = services.send_message(None, resolve, "send-0002", "second")  # no joined sender: full path
    assert (retry.wire["id"], retry.created) == (second.wire["id"], False)


@pytest.mark.parametrize("client_id, body, attachment_id", [
    ("bad id!", "hello", None), (None, "hello", None), ("fast-0001", "", None), ("fast-0001", "   ", None),
    ("fast-0001", 42, None), ("fast-0001", "x" * 20_000, None), ("fast-0001", "hello", 1),
])
def test_the_fast_path_leaves_malformed_payloads_and_attachments_to_post_message(pair, client_id, body,
                                                                                 attachment_id):
    rural, _, consult = pair
    post_message(rural, consult, "slow-0001", "first")
    fast = services.post_message_fast(sender_of(rural, consult), client_id, body, attachment_id)
    assert fast == services.FastPost(None, rate_charged=False)  # not counted against the rate limit
    assert counter_of(consult) == 1


def test_the_fast_path_and_the_full_path_share_one_gap_free_sequence_under_concurrency(app, pair, database_url):
    require(database_url not in ("sqlite://", "sqlite:///:memory:"),
            "concurrent connections need a file or server database, not in-memory SQLite")
    rural, specialist, consult = pair
    post_message(rural, consult, "seed-0001", "first")
    senders = [sender_of(rural, consult), sender_of(specialist, consult)]
    consult_id = consult.id
    threads_n, per_thread = 6, 6

    def work(t: int) -> None:
        from webapp.models import Consult, User

        sender = senders[t % 2]
        for i in range(per_thread):
            client_id = f"c{t:02d}-{i:03d}-x"
            if services.post_message_fast(sender, client_id, f"t{t} m{i}").wire is None:
                raise AssertionError(f"fast path refused {client_id}")
            # a retry takes the full path and finds the original
            assert services.post_message_fast(sender, client_id, "again").wire is None
            again = post_message(db.session.get(User, sender.user_id),
                                 db.session.get(Consult, consult_id), client_id, "again")
            assert again.created is False

    run_concurrently(app, work, threads_n)
    db.session.rollback()
    seqs = db.session.scalars(select(Message.seq).where(Message.consult_id == consult_id).order_by(Message.seq)).all()
    assert seqs == list(range(1, threads_n * per_thread + 2))
    assert counter_of(consult) == threads_n * per_thread + 1


# --- each sender's order (client_seq) and the replay of an outbox (issue 9 item 1) ---------------


def stored_bodies(consult) -> list[str]:
    db.session.rollback()
    return list(db.session.scalars(select(Message.body).where(Message.consult_id == consult.id)
                                   .order_by(Message.seq)))


@pytest.mark.parametrize("path", ["full", "fast"])
def test_a_message_numbered_below_the_senders_last_is_refused_not_stored(pair, path):
    """"…23, 26, 25, 24…" cannot be stored: the late 24 is refused, a retry of a stored one is not."""
    rural, specialist, consult = pair

    def send(client_id: str, body: str, client_seq: int | None, user=rural):
        if path == "full":
            return post_message(user, consult, client_id, body, client_seq=client_seq).message
        return services.send_message(sender_of(user, consult), lambda: (user, consult), client_id, body,
                                     client_seq=client_seq).wire

    post_message(specialist, consult, "counter-0001", "creates the counter")  # the fast path needs it
    for n in (23, 26):
        send(f"order-00{n}", f"message {n}", n)
    before = counter_of(consult)
    with pytest.raises(services.OutOfOrder) as refused:
        send("order-0025", "message 25", 25)
    assert refused.value.status == 409 and refused.value.code == "out_of_order"
    assert refused.value.last_client_seq == 26
    with pytest.raises(services.OutOfOrder):
        send("order-0026b", "another 26", 26)  # equal is not above
    assert counter_of(consult) == before  # no sequence number taken: still gapless
    # a retry of a stored message is answered with it (its ack was lost), whatever its number
    retried = post_message(rural, consult, "order-0023", "message 23", client_seq=24)
    assert retried.created is False and retried.message.body == "message 23"
    # the order is per sender; a client that sends no number (an older page) is not checked
    send("spec-0001", "the other doctor", 1, user=specialist)
    send("legacy-0001", "from an older page", None)
    send("order-0027", "message 27", 27)
    assert stored_bodies(consult) == ["creates the counter", "message 23", "message 26", "the other doctor",
                                      "from an older page", "message 27"]
    assert counter_of(consult) == 6


@pytest.mark.parametrize("client_seq, waited_ms", [
    (0, None), (-1, None), (2**31, None), ("3", None), (True, None), (1.5, None),
    (1, -1), (1, "1000"), (1, False), (1, 2.5),
])
def test_client_seq_and_waited_ms_are_validated(pair, client_seq, waited_ms):
    rural, _, consult = pair
    with pytest.raises(ValidationFailed):
        post_message(rural, consult, "valid-0001", "hello", client_seq=client_seq, waited_ms=waited_ms)
    fast = services.post_message_fast(sender_of(rural, consult), "valid-0001", "hello",
                                      client_seq=client_seq, waited_ms=waited_ms)
    assert fast == services.FastPost(None, rate_charged=False)
    assert stored_bodies(consult) == []


@pytest.fixture(params=["memory", "redis"])
def limiter_storage(request, app, monkeypatch) -> str:
    """The chat limiter in one process (memory://) and shared by processes (Redis, REDIS_TEST_URL)."""
    uri = "memory://"
    if request.param == "redis":
        uri = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")
        try:
            redis.Redis.from_url(uri, socket_connect_timeout=2).ping()
        except redis.RedisError:
            require(False, f"Redis is not reachable at {uri}")
    monkeypatch.setitem(app.config, "RATELIMIT_STORAGE_URI", uri)
    state.reset(app)
    limiter = throttle.chat_limiter()
    if request.param == "redis":
        limiter.storage.reset()  # windows left by an earlier run for the same user ids
    return uri


def test_a_replayed_outbox_is_not_refused_by_the_per_second_limit_but_replays_are_bounded(app, pair,
                                                                                          monkeypatch,
                                                                                          limiter_storage):
    """A reconnect flush of 12 waiting messages goes through at 3/s; a client claiming everything is
    a replay still gets at most CHAT_REPLAYS_PER_MINUTE more than the per-second limit."""
    rural, specialist, consult = pair
    monkeypatch.setitem(app.config, "CHAT_MESSAGES_PER_SECOND", 3)
    monkeypatch.setitem(app.config, "CHAT_REPLAYS_PER_MINUTE", 15)
    for n in range(1, 13):  # the backlog, one at a time in order, as room.js sends it
        sent = services.send_message(sender_of(rural, consult), lambda: (rural, consult), f"replay-{n:04d}",
                                     f"offline {n}", client_seq=n, waited_ms=30_000 - n)
        assert sent.created and sent.wire["seq"] == n
    # new messages (not waiting) still have the per-second limit, and it is untouched by the replay
    for n in range(13, 16):
        post_message(rural, consult, f"replay-{n:04d}", f"live {n}", client_seq=n, waited_ms=0)
    with pytest.raises(TooManyMessages):
        post_message(rural, consult, "replay-0016", "too fast", client_seq=16, waited_ms=10)
    # the replay allowance (15/min) has 3 left, then replays count against the (spent) per-second limit
    for n in range(16, 19):
        post_message(rural, consult, f"replay-{n:04d}", f"claimed replay {n}", client_seq=n, waited_ms=60_000)
    with pytest.raises(TooManyMessages):
        post_message(rural, consult, "replay-0019", "one replay too many", client_seq=19, waited_ms=60_000)
    assert len(stored_bodies(consult)) == 18
    # per user: the other doctor is not affected
    assert post_message(specialist, consult, "other-0001", "still fine", waited_ms=0).created
