"""Each wired event creates the right notifications in the change's transaction, and none when it rolls back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.notifications.conftest import CommitFailed, counts, notifications_of
from webapp.auth import services as auth
from webapp.auth.services import Registration
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import AccountStatus, ConsultStatus, Message, Role, Urgency, User, utcnow
from webapp.notifications import services as notifications
from webapp.rooms import services as rooms
from webapp.scheduling import services as scheduling


def _kinds(user) -> list[str]:
    return [n.kind for n in notifications_of(user)]


def test_submit_offers_to_each_specialist_with_email_delivery(make):
    rural, s1, s2 = make.rural(), make.specialist(), make.specialist()
    other = make.specialist(specialty="dermatology")
    consult = make.requested(rural, urgency=Urgency.EMERGENCY)
    for s in (s1, s2):
        [note] = notifications_of(s, "consult.offered")
        assert note.consult_id == consult.id and note.urgent
        assert note.params == {"urgency": "emergency", "specialty": "cardiology"}
        assert [d.channel for d in note.deliveries] == ["email"]
        assert note.deliveries[0].status == "pending"
    assert notifications_of(other) == [] and notifications_of(rural) == []


def test_submit_rolled_back_leaves_no_notification(make, failing_commit):
    rural, _ = make.rural(), make.specialist()
    draft = make.draft(rural)
    before = counts()
    with failing_commit(), pytest.raises(CommitFailed):
        consults.submit(rural, draft.ref)
    assert counts() == before
    assert db.session.get(type(draft), draft.id).status == ConsultStatus.DRAFT


def test_accept_with_a_slot_tells_the_requester_accepted_and_booked(make):
    rural, spec = make.rural(), make.specialist()
    consult = make.scheduled(rural, spec)
    assert _kinds(rural) == ["consult.accepted", "consult.booked"]
    booked = notifications_of(rural, "consult.booked")[0]
    assert booked.params["by"] == spec.full_name
    assert booked.params["starts_at"] == consult.appointment.starts_at.isoformat()
    assert notifications_of(spec, "consult.booked") == []  # the one who booked knows


def test_accept_rolled_back_leaves_no_notification(make, failing_commit):
    rural, spec = make.rural(), make.specialist()
    consult = make.requested(rural)
    before = counts()
    with failing_commit(), pytest.raises(CommitFailed):
        consults.accept(spec, consult.ref)
    assert counts() == before


def test_book_by_the_requester_tells_the_specialist(make):
    rural, spec = make.rural(), make.specialist()
    make.availability(spec)
    consult = make.accepted(rural, spec)
    slot = scheduling.open_slots(spec)[1]
    consults.book(rural, consult.ref, slot.starts_at)
    assert [n.params["by"] for n in notifications_of(spec, "consult.booked")] == [rural.full_name]


def test_book_rolled_back_leaves_no_notification(make, failing_commit):
    rural, spec = make.rural(), make.specialist()
    make.availability(spec)
    consult = make.accepted(rural, spec)
    slot = scheduling.open_slots(spec)[1]
    before = counts()
    with failing_commit(), pytest.raises(CommitFailed):
        consults.book(rural, consult.ref, slot.starts_at)
    assert counts() == before


def test_assign_tells_the_requester(make):
    rural, spec, coord = make.rural(), make.specialist(), make.coordinator()
    consult = make.requested(rural)
    consults.decline(spec, consult.ref, "On leave")
    consults.assign(coord, consult.ref, spec.id)
    assert notifications_of(rural, "consult.accepted")[0].params == {"by": spec.full_name}


def test_cancel_tells_the_other_party_with_the_reason(make):
    rural, spec, coord = make.rural(), make.specialist(), make.coordinator()
    consult = make.scheduled(rural, spec)
    consults.cancel(rural, consult.ref, "Patient transferred")
    [note] = notifications_of(spec, "consult.cancelled")
    assert note.params == {"by": rural.full_name, "reason": "Patient transferred"}
    assert notifications_of(rural, "consult.cancelled") == []
    other = make.scheduled(rural, spec)
    consults.cancel(coord, other.ref, "Duplicate")
    assert len(notifications_of(rural, "consult.cancelled")) == 1
    assert len(notifications_of(spec, "consult.cancelled")) == 2


def test_cancel_rolled_back_leaves_no_notification(make, failing_commit):
    rural, spec = make.rural(), make.specialist()
    consult = make.scheduled(rural, spec)
    before = counts()
    with failing_commit(), pytest.raises(CommitFailed):
        consults.cancel(rural, consult.ref, "Patient transferred")
    assert counts() == before


def _signed(make):
    rural, spec = make.rural(), make.specialist()
    consult = make.accepted(rural, spec)
    consults.save_recommendation(spec, consult.ref, consults.RecommendationData(
        assessment="Stable angina", plan="Start aspirin"), sign=True)
    return rural, spec, consult


def test_sign_and_acknowledge(make):
    rural, spec, consult = _signed(make)
    assert notifications_of(rural, "recommendation.signed")[0].params == {"by": spec.full_name}
    consults.acknowledge(rural, consult.ref)
    assert notifications_of(spec, "recommendation.acknowledged")[0].params == {"by": rural.full_name}


def test_sign_and_acknowledge_rolled_back(make, failing_commit):
    rural, spec = make.rural(), make.specialist()
    consult = make.accepted(rural, spec)
    before = counts()
    with failing_commit(), pytest.raises(CommitFailed):
        consults.save_recommendation(spec, consult.ref, consults.RecommendationData(
            assessment="Stable angina", plan="Start aspirin"), sign=True)
    assert counts() == before
    consults.save_recommendation(spec, consult.ref, consults.RecommendationData(
        assessment="Stable angina", plan="Start aspirin"), sign=True)
    before = counts()
    with failing_commit(), pytest.raises(CommitFailed):
        consults.acknowledge(rural, consult.ref)
    assert counts() == before


def _registration(make, email="new.doctor@test.example") -> Registration:
    facility = make.facility()
    return Registration(email=email, password="a-long-enough-passphrase-9", full_name="Dr. New",
                        role=Role.RURAL_DOCTOR, facility_id=facility.id, licence_number="LIC99999",
                        timezone="Asia/Shanghai", languages=("zh-CN",), specialty=None)


def test_registration_waiting_approved_refused(make):
    c1, c2 = make.coordinator(), make.coordinator()
    user = auth.register(_registration(make))
    for c in (c1, c2):
        assert notifications_of(c, "account.registered")[0].params["name"] == "Dr. New"
    auth.approve(c1, user.id)
    assert _kinds(user) == ["account.approved"]
    other = auth.register(_registration(make, "other@test.example"))
    auth.reject(c1, other.id, "Licence not found")
    assert _kinds(other) == ["account.rejected"]


def test_registration_and_review_rolled_back(make, failing_commit):
    coord = make.coordinator()
    before = counts()
    with failing_commit(), pytest.raises(CommitFailed):
        auth.register(_registration(make))
    assert counts() == before
    pending = make.rural(status=AccountStatus.PENDING)
    before = counts()
    with failing_commit(), pytest.raises(CommitFailed):
        auth.approve(coord, pending.id)
    with failing_commit(), pytest.raises(CommitFailed):
        auth.reject(coord, pending.id, "No licence")
    assert counts() == before


def _chat(consult, sender, present: set[int], n: int = 0):
    """Store a chat message with the room's people as given (the notifications ride in its commit)."""
    return rooms.post_message(sender, consult, f"client-{n:04d}", "BP 180/110", present=lambda: present)


def test_chat_message_while_away_at_most_once_in_five_minutes(make, generous_chat):
    rural, spec = make.rural(), make.specialist()
    consult = make.accepted(rural, spec)
    _chat(consult, spec, {spec.id}, 1)
    _chat(consult, spec, {spec.id}, 2)
    assert len(notifications_of(rural, "chat.message")) == 1
    assert notifications_of(spec, "chat.message") == []
    _chat(consult, rural, {rural.id, spec.id}, 3)  # he is there
    assert notifications_of(spec, "chat.message") == []
    note = notifications_of(rural, "chat.message")[0]
    note.created_at = utcnow() - timedelta(minutes=6)
    db.session.commit()
    _chat(consult, spec, {spec.id}, 4)
    assert len(notifications_of(rural, "chat.message")) == 2


def test_chat_notification_exists_exactly_when_the_message_does(make, failing_commit, generous_chat):
    """One transaction: a message whose commit fails leaves no notification, and a retried
    message (stored already) makes no second one."""
    rural, spec = make.rural(), make.specialist()
    consult = make.accepted(rural, spec)
    with failing_commit(), pytest.raises(CommitFailed):
        _chat(consult, spec, {spec.id}, 1)
    assert db.session.scalar(select(func.count(Message.id)).where(Message.consult_id == consult.id)) == 0
    assert notifications_of(rural, "chat.message") == []
    first = _chat(consult, spec, {spec.id}, 1)
    assert first.created and len(notifications_of(rural, "chat.message")) == 1
    note = notifications_of(rural, "chat.message")[0]
    note.created_at = utcnow() - timedelta(minutes=6)  # the quiet time is over: only a new message rings
    db.session.commit()
    again = _chat(consult, spec, {spec.id}, 1)
    assert not again.created and again.message.id == first.message.id
    assert len(notifications_of(rural, "chat.message")) == 1


def test_the_fast_path_is_kept_when_no_notification_can_be_due(app, make, generous_chat):
    rural, spec = make.rural(), make.specialist()
    consult = make.accepted(rural, spec)
    known = notifications.chat_notices()
    assert not known.may_be_due(consult.id, spec.id, {spec.id, rural.id}), "everyone is in the room"
    assert known.may_be_due(consult.id, spec.id, {spec.id}), "he is away and was not told yet"
    _chat(consult, spec, {spec.id}, 1)
    assert not known.may_be_due(consult.id, spec.id, {spec.id}), "told a moment ago"
    assert known.may_be_due(consult.id, rural.id, {rural.id}), "the specialist was not told"


def test_waiting_in_the_room_near_the_booked_time_only(make, failing_commit):
    rural, spec = make.rural(), make.specialist()
    consult = make.scheduled(rural, spec)
    starts = consult.appointment.starts_at
    if starts - utcnow() > notifications.WAITING_BEFORE:  # a later slot: not near the booked time yet
        rooms.enter_room(spec, consult.ref, present=lambda cid: {spec.id})
        assert notifications_of(rural, "room.waiting") == []
    consult.appointment.starts_at = utcnow() + timedelta(minutes=5)
    consult.appointment.ends_at = utcnow() + timedelta(minutes=35)
    db.session.commit()
    with failing_commit(), pytest.raises(CommitFailed):  # the entry is not recorded: nobody is told
        rooms.enter_room(spec, consult.ref, present=lambda cid: {spec.id})
    assert notifications_of(rural, "room.waiting") == []
    rooms.enter_room(spec, consult.ref, present=lambda cid: {spec.id})
    rooms.enter_room(spec, consult.ref, present=lambda cid: {spec.id})  # re-entering does not ring again
    [note] = notifications_of(rural, "room.waiting")
    assert note.params["by"] == spec.full_name and note.urgent
    rooms.enter_room(rural, consult.ref, present=lambda cid: {rural.id, spec.id})  # he is there
    assert notifications_of(spec, "room.waiting") == []


def test_unread_count_mark_one_and_all(make):
    rural, s1 = make.rural(), make.specialist()
    make.requested(rural)
    make.requested(rural)
    assert notifications.unread_count(s1.id) == 2
    first = notifications_of(s1)[0]
    notifications.mark_read(s1, first.id)
    assert notifications.unread_count(s1.id) == 1
    assert notifications.mark_all_read(s1) == 1
    assert notifications.unread_count(s1.id) == 0


def test_mark_read_of_someone_elses_is_not_found(make):
    from webapp.errors import NotFound

    rural, s1 = make.rural(), make.specialist()
    make.requested(rural)
    note = notifications_of(s1)[0]
    with pytest.raises(NotFound):
        notifications.mark_read(rural, note.id)
    assert db.session.get(type(note), note.id).read_at is None


def test_quiet_hours_hold_back_mail_but_never_an_emergency(make):
    rural, spec = make.rural(), make.specialist(timezone="UTC")
    now = utcnow()
    start = (now.hour * 60 + now.minute - 60) % 1440
    notifications.save_preferences(spec, [], start, (start + 180) % 1440)  # quiet now, for 2 more hours
    make.requested(rural, urgency=Urgency.ROUTINE)
    make.requested(rural, urgency=Urgency.EMERGENCY)
    routine, emergency = notifications_of(spec, "consult.offered")
    assert routine.deliveries[0].next_attempt_at > now + timedelta(minutes=100)
    assert emergency.deliveries[0].next_attempt_at <= utcnow()


def test_muted_channel_has_no_delivery(make, app, monkeypatch):
    monkeypatch.setitem(app.config, "NOTIFY_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    rural, spec = make.rural(), make.specialist()
    notifications.save_preferences(spec, ["email:consult.offered"], None, None)
    make.requested(rural)
    [note] = notifications_of(spec, "consult.offered")
    assert [d.channel for d in note.deliveries] == ["webhook"]


def test_unknown_kind_is_refused(make):
    user = make.rural()
    with pytest.raises(ValueError):
        notifications.notify([user], "no.such.kind", {})
    assert isinstance(db.session.get(User, user.id), User)


def test_a_booked_time_is_shown_in_the_recipients_zone(make):
    from webapp.notifications import texts

    text = texts.title("consult.booked", {"by": "Dr. Zhang", "starts_at": "2026-12-02T01:30:00+00:00"},
                       "Asia/Shanghai")
    assert text == "Consultation booked by Dr. Zhang for Wed 02 Dec 2026, 09:30 CST (Asia/Shanghai)"


def test_the_chat_party_cache_refreshes_rooms_near_their_time_in_one_read(app, make, monkeypatch):
    """Hundreds of rooms each re-reading their parties every PARTIES_TTL cost a round trip per
    message at low rates: a read refreshes every room past half its time in the same statement."""
    rural, spec = make.rural(), make.specialist()
    consults_ = [make.accepted(rural, spec) for _ in range(3)]
    known = notifications.chat_notices()
    reads: list[list[int]] = []
    real_read = known._read
    monkeypatch.setattr(known, "_read", lambda ids: reads.append(sorted(ids)) or real_read(ids))
    clock = [1000.0]
    monkeypatch.setattr(notifications.time, "monotonic", lambda: clock[0])
    for c in consults_:
        assert known.parties(c.id) == {rural.id, spec.id}
    assert len(reads) == 3
    clock[0] += known.PARTIES_TTL / 2 + 1  # all three past half their time, none expired
    assert known.parties(consults_[0].id) == {rural.id, spec.id} and len(reads) == 3  # still fresh: no read
    clock[0] += known.PARTIES_TTL / 2  # the first expired: one read refreshes all three
    trainee = make.trainee(consults_[2])
    assert known.parties(consults_[0].id) == {rural.id, spec.id}
    assert reads[3:] == [sorted(c.id for c in consults_)]
    assert known.parties(consults_[2].id) == {rural.id, spec.id, trainee.id} and len(reads) == 4
