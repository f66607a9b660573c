"""The access matrix, exhaustively: every standing (participant role, coordinator, offered or invited
specialist) x every consult status x every action, on consults built through the services.

The expectations below are written from the issue's rules (docs/architecture.md, "Participants"),
independently of consults.policy.MATRIX, so a slip in the matrix shows as a difference here.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from webapp.consults import participants, policy
from webapp.consults import services as consults
from webapp.consults.policy import Action, Standing
from webapp.errors import Conflict, Forbidden, NotFound
from webapp.extensions import db
from webapp.models import (
    Consult,
    ConsultOffer,
    ConsultParticipant,
    ConsultStatus,
    OfferStatus,
    ParticipantRole,
    utcnow,
)
from webapp.scheduling import services as scheduling

S = ConsultStatus
LIVE = {S.ACCEPTED, S.SCHEDULED}
ROOM = LIVE | {S.COMPLETED, S.CANCELLED}
OPEN = {S.REQUESTED, S.DECLINED}
BEFORE_ANSWER = {S.DRAFT} | OPEN | LIVE
PARTICIPANTS = {Standing.REQUESTER, Standing.LEAD_SPECIALIST, Standing.SPECIALIST, Standing.TRAINEE}
MEDIA = {Standing.REQUESTER, Standing.LEAD_SPECIALIST, Standing.SPECIALIST}  # trainees receive only
# ... unless the lead lets one speak: a speaker is a trainee too (both standings)


def expected(standing: Standing, status: ConsultStatus, action: Action) -> bool:
    """The issue's rules, one action at a time."""
    s, a = standing, action
    req, lead, spec, coord = Standing.REQUESTER, Standing.LEAD_SPECIALIST, Standing.SPECIALIST, Standing.COORDINATOR
    rules = {
        Action.VIEW: s in (req, coord) or (s in PARTICIPANTS and status in ROOM)
        or (s == Standing.OFFERED and status in OPEN) or (s == Standing.INVITED and status in LIVE),
        Action.EDIT_CASE: s == req and status in {S.DRAFT} | OPEN,
        Action.SUBMIT: s == req and status == S.DRAFT,
        Action.ATTACH: (s == req and status in BEFORE_ANSWER) or (s in (lead, spec) and status in LIVE),
        Action.CANCEL: s in (req, coord) and status in BEFORE_ANSWER,
        Action.SEE_MATCHING: s in (req, coord),
        Action.ASSIGN: s == coord and status in OPEN,
        Action.BOOK: s in (req, lead) and status == S.ACCEPTED,
        Action.RESCHEDULE: s in (req, lead) and status == S.SCHEDULED,
        Action.SIGN: s == lead and status in LIVE,  # the recommendation and the refer-up decision
        Action.ACKNOWLEDGE: s == req and status == S.COMPLETED,
        Action.ADD_OPINION: s == spec and status in LIVE | {S.COMPLETED},
        Action.INVITE: s in (req, lead) and status in LIVE,
        Action.REMOVE: s in (req, lead, coord) and status in LIVE,
        Action.ENTER_ROOM: (s in PARTICIPANTS or s == coord) and status in ROOM,
        Action.POST: s in PARTICIPANTS and status in LIVE,  # trainees may ask questions
        Action.SEND_RECEIPT: s in PARTICIPANTS and status in ROOM,  # never a coordinator looking in
        Action.OPEN_NOTES: (s in PARTICIPANTS or s == coord) and status in ROOM,
        Action.EDIT_NOTES: s in MEDIA and status in LIVE,  # trainees read the notes only
        Action.JOIN_CALL: s in PARTICIPANTS and status in LIVE,
        Action.SEND_MEDIA: (s in MEDIA or s == Standing.SPEAKER) and status in LIVE,
        Action.RAISE_HAND: s in (Standing.TRAINEE, Standing.SPEAKER) and status in LIVE,
        Action.ALLOW_SPEECH: s == lead and status in LIVE,
    }
    assert set(rules) == set(Action), "every action has a rule here"
    return rules[a]


def test_the_matrix_lists_every_standing_and_stage():
    assert set(policy.MATRIX) == set(Standing)
    for rules in policy.MATRIX.values():
        assert set(rules) == set(policy.Stage)
    assert set(policy.STAGE_OF) == set(ConsultStatus)


def _consult_in(make, status: ConsultStatus, world: dict) -> Consult:
    """A consult in the status, with a lead, a second specialist and a trainee where the status has them
    (added through the services while it was open, then moved on), the others' rows added directly."""
    requester, lead = world["requester"], world["lead"]
    if status == S.DRAFT:
        c = make.draft(requester)
    elif status in OPEN:
        c = make.requested(requester)
        if status == S.DECLINED:
            consults.decline(lead, c.ref, "Not mine.")
            consults.decline(world["offered"], c.ref, "Not mine either.")
            # declined by all; one offer is made again (as a re-offer would), directly
            offer = db.session.scalar(select(ConsultOffer).where(ConsultOffer.consult_id == c.id,
                                                                 ConsultOffer.specialist_id == world["offered"].id))
            offer.status = OfferStatus.OFFERED
            db.session.commit()
    else:
        c = make.scheduled(requester, lead) if status == S.SCHEDULED else make.accepted(requester, lead)
        for key, role in (("specialist", "specialist"), ("trainee", "trainee")):
            make.participant(c, world[key], role)
        participants.invite(requester, c.ref, world["invited"].id, "specialist")
        if status == S.COMPLETED:
            consults.save_recommendation(lead, c.ref, consults.RecommendationData(assessment="a", plan="p"),
                                         sign=True)
        elif status == S.CANCELLED:
            consults.cancel(requester, c.ref, "Patient recovered.")
    c = db.session.scalar(select(Consult).where(Consult.ref == c.ref))
    assert c.status == status
    if status in {S.DRAFT} | OPEN:  # rows the services cannot make before a specialist accepts
        now = utcnow()
        for key, role in (("lead_row", ParticipantRole.LEAD_SPECIALIST), ("specialist", ParticipantRole.SPECIALIST),
                          ("trainee", ParticipantRole.TRAINEE)):
            db.session.add(ConsultParticipant(consult_id=c.id, user_id=world[key].id, role=role,
                                              added_at=now, accepted_at=now))
        db.session.add(ConsultParticipant(consult_id=c.id, user_id=world["invited"].id,
                                          role=ParticipantRole.SPECIALIST, added_at=now))
        db.session.commit()
        db.session.expire_all()
        c = db.session.scalar(select(Consult).where(Consult.ref == c.ref))
    return c


@pytest.mark.parametrize("status", list(ConsultStatus), ids=[s.value for s in ConsultStatus])
def test_every_standing_every_action(app, make, status):
    facility = make.facility()
    world = {
        "requester": make.rural(facility=facility),
        "lead": make.specialist(),
        "lead_row": make.specialist(specialty="neurology"),  # the lead's row before anyone accepted
        "offered": make.specialist(),
        "specialist": make.specialist(specialty="neurology"),
        "trainee": make.rural(facility=facility),
        "invited": make.specialist(specialty="neurology"),
        "coordinator": make.coordinator(),
    }
    make.availability(world["lead"])
    consult = _consult_in(make, status, world)
    users = {
        Standing.REQUESTER: world["requester"], Standing.LEAD_SPECIALIST: world["lead"],
        Standing.SPECIALIST: world["specialist"], Standing.TRAINEE: world["trainee"],
        Standing.COORDINATOR: world["coordinator"], Standing.INVITED: world["invited"],
    }
    if status in {S.DRAFT} | OPEN:
        users[Standing.LEAD_SPECIALIST] = world["lead_row"]
    if status in OPEN:  # the specialist holding an open offer (the cardiologist, while requested)
        users[Standing.OFFERED] = world["offered"] if status == S.DECLINED else world["lead"]
    # a trainee the lead has let speak in the call: a trainee and a speaker
    speaker = make.rural(facility=facility)
    now = utcnow()
    db.session.add(ConsultParticipant(consult_id=consult.id, user_id=speaker.id, role=ParticipantRole.TRAINEE,
                                      added_at=now, accepted_at=now, speech_allowed_at=now))
    db.session.commit()
    db.session.expire_all()
    consult = db.session.scalar(select(Consult).where(Consult.ref == consult.ref))
    stranger = make.specialist()
    wrong = []
    for standing, user in users.items():
        for action in Action:
            if policy.allows(user, consult, action) != expected(standing, status, action):
                wrong.append((standing.value, action.value, policy.allows(user, consult, action)))
    assert policy.standings(speaker, consult) == {Standing.TRAINEE, Standing.SPEAKER}
    for action in Action:
        both = expected(Standing.TRAINEE, status, action) or expected(Standing.SPEAKER, status, action)
        if policy.allows(speaker, consult, action) != both:
            wrong.append(("speaker", action.value, policy.allows(speaker, consult, action)))
    for action in Action:
        assert not policy.allows(stranger, consult, action), action
    assert wrong == [], wrong


# --- the services follow the policy ----------------------------------------------------------------


@pytest.fixture
def team(make):
    """An accepted consult with its requester, lead, a second specialist and a trainee."""
    requester, lead = make.rural(), make.specialist()
    c = make.accepted(requester, lead)
    second, trainee = make.second_specialist(c), make.trainee(c)
    return c, requester, lead, second, trainee


def test_backfilled_and_service_written_participants_agree_with_the_columns(make, team):
    c, requester, lead, second, trainee = team
    c = db.session.scalar(select(Consult).where(Consult.ref == c.ref))
    roles = {p.user_id: p.role for p in policy.active_participants(c)}
    assert roles == {lead.id: ParticipantRole.LEAD_SPECIALIST, second.id: ParticipantRole.SPECIALIST,
                     requester.id: ParticipantRole.REQUESTER, trainee.id: ParticipantRole.TRAINEE}
    assert c.requester_id == requester.id and c.specialist_id == lead.id
    # the polite peer follows the role order: the lead alone is impolite
    assert [policy.is_polite(u, c) for u in (lead, second, requester, trainee)] == [False, True, True, True]
    assert policy.is_polite(second, c, requester.id) is False and policy.is_polite(requester, c, second.id)


def test_only_the_lead_signs_and_the_second_specialist_edits_notes(make, team):
    from webapp.notes import services as notes

    c, _requester, lead, second, trainee = team
    with pytest.raises(Forbidden):
        consults.save_recommendation(second, c.ref, consults.RecommendationData(assessment="a", plan="p"), sign=True)
    with pytest.raises(Forbidden):
        consults.book(trainee, c.ref, scheduling.open_slots(lead)[1].starts_at if scheduling.windows_of(lead)
                      else utcnow())
    c = db.session.scalar(select(Consult).where(Consult.ref == c.ref))
    assert notes.can_edit(second, c) and not notes.can_edit(trainee, c) and notes.can_open(trainee, c)


def test_a_trainee_posts_questions_but_sends_no_media(make, team):
    from webapp.rooms import services as rooms
    from webapp.video import services as video

    c, _requester, _lead, second, trainee = team
    c = db.session.scalar(select(Consult).where(Consult.ref == c.ref))
    posted = rooms.post_message(trainee, c, "trainee-q-0001", "Why not thrombolysis?", rate_charged=True)
    assert posted.created and posted.message.sender_id == trainee.id
    video.require_call_party(trainee, c)  # joins, receive-only
    sending = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP 111\r\na=sendrecv\r\n"
    receiving = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP 111\r\na=recvonly\r\n" \
                "m=video 9 UDP 96\r\na=recvonly\r\n"
    with pytest.raises(Forbidden):
        video.check_media(trainee, c, {"type": "offer", "sdp": sending})
    with pytest.raises(Forbidden):  # no direction attribute means sendrecv
        video.check_media(trainee, c, {"type": "offer", "sdp": sending.replace("a=sendrecv\r\n", "")})
    video.check_media(trainee, c, {"type": "answer", "sdp": receiving})
    video.check_media(second, c, {"type": "offer", "sdp": sending})


def test_removal_takes_effect_at_once_and_requester_and_lead_stay(make, team):
    from webapp.rooms import services as rooms

    c, requester, lead, second, trainee = team
    coordinator, stranger = make.coordinator(), make.rural()
    with pytest.raises(Forbidden):  # the lead did not invite them
        participants.remove(lead, c.ref, trainee.id)
    with pytest.raises(Forbidden):
        participants.remove(requester, c.ref, lead.id)
    with pytest.raises(Forbidden):
        participants.remove(coordinator, c.ref, requester.id)
    with pytest.raises(NotFound):
        participants.remove(stranger, c.ref, trainee.id)
    participants.remove(requester, c.ref, trainee.id)  # the inviter
    participants.remove(coordinator, c.ref, second.id)  # a coordinator
    c = db.session.scalar(select(Consult).where(Consult.ref == c.ref))
    for gone in (trainee, second):
        assert not policy.can_view(gone, c)
        with pytest.raises(NotFound):
            rooms.enter_room(gone, c.ref)
        with pytest.raises(NotFound):
            consults.view_consult(gone, c.ref)
    history = participants.history(c)
    assert [(p.user_id, p.removed_by_id) for p in history if p.removed_at] == [(second.id, coordinator.id),
                                                                               (trainee.id, requester.id)] or \
        {(p.user_id, p.removed_by_id) for p in history if p.removed_at} == {(second.id, coordinator.id),
                                                                            (trainee.id, requester.id)}
    # invited again later, the same person gets a new row (history kept)
    make.participant(c, trainee, "trainee")
    c = db.session.scalar(select(Consult).where(Consult.ref == c.ref))
    assert policy.role_of(trainee, c) == ParticipantRole.TRAINEE
    assert len([p for p in c.participants if p.user_id == trainee.id]) == 2


def test_invitations_check_who_and_when(make):
    facility = make.facility()
    requester, lead = make.rural(facility=facility), make.specialist()
    c = make.requested(requester)
    other_rural = make.rural()  # another facility: not a trainee of this consult
    with pytest.raises(Forbidden):  # no lead yet: nobody invites
        participants.invite(requester, c.ref, make.specialist().id, "specialist")
    c = consults.accept(lead, c.ref)
    from webapp.errors import ValidationFailed

    with pytest.raises(ValidationFailed):
        participants.invite(requester, c.ref, other_rural.id, "trainee")
    with pytest.raises(ValidationFailed):
        participants.invite(requester, c.ref, other_rural.id, "specialist")  # not a specialist
    with pytest.raises(ValidationFailed):
        participants.invite(requester, c.ref, make.specialist().id, "lead_specialist")
    invitee = make.specialist(specialty="neurology")
    participants.invite(lead, c.ref, invitee.id, "specialist")
    with pytest.raises(Conflict):
        participants.invite(requester, c.ref, invitee.id, "specialist")
    c = db.session.scalar(select(Consult).where(Consult.ref == c.ref))
    assert policy.can_view(invitee, c) and not policy.allows(invitee, c, Action.ENTER_ROOM)
    participants.respond(invitee, c.ref, accept=False)
    c = db.session.scalar(select(Consult).where(Consult.ref == c.ref))
    assert not policy.can_view(invitee, c)
    with pytest.raises(NotFound):
        participants.respond(invitee, c.ref, accept=True)
    # a resident of the lead's hospital may watch as a trainee
    resident = make.specialist(facility=db.session.get(type(facility), lead.facility_id))
    participants.invite(lead, c.ref, resident.id, "trainee")
    participants.respond(resident, c.ref, accept=True)
    c = db.session.scalar(select(Consult).where(Consult.ref == c.ref))
    assert policy.role_of(resident, c) == ParticipantRole.TRAINEE


def test_notifications_go_to_every_active_participant_but_the_actor(make, team):
    from webapp.models import Notification

    c, requester, lead, second, trainee = team
    consults.save_recommendation(lead, c.ref, consults.RecommendationData(assessment="a", plan="p"), sign=True)
    told = set(db.session.scalars(select(Notification.user_id).where(
        Notification.consult_id == c.id, Notification.kind == "recommendation.signed")))
    assert told == {requester.id, second.id, trainee.id}
