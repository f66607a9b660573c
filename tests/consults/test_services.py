"""Consult use cases, called as the routes call them, checked against what the database holds."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

from webapp.consults import services as consults
from webapp.consults.state import EVENT_VERBS, Event
from webapp.errors import Conflict, DomainError, Forbidden, InvalidTransition, NotFound, ValidationFailed
from webapp.extensions import db
from webapp.models import (
    AccountStatus,
    Appointment,
    AuditEvent,
    BookedBlock,
    Consult,
    ConsultMode,
    ConsultOffer,
    ConsultStatus,
    OfferStatus,
    Recommendation,
    Sex,
    Urgency,
)
from webapp.scheduling import services as scheduling

ANSWER = consults.RecommendationData(
    assessment="Unstable angina, TIMI 3.", plan="Dual antiplatelets; transfer for angiography.",
    follow_up="Review in two weeks.",
)


# --- helpers ------------------------------------------------------------------------------


def refused(exc_type: type[DomainError], fn, *args, **kwargs) -> DomainError:
    """Call a use case that must refuse, then roll back as every caller (route) does."""
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    db.session.rollback()
    return info.value


def stored(ref: str) -> Consult:
    """The consult as the database holds it now."""
    return db.session.scalars(
        select(Consult).where(Consult.ref == ref).execution_options(populate_existing=True)
    ).one()


def offer_states(ref: str) -> dict[int, OfferStatus]:
    rows = db.session.scalars(
        select(ConsultOffer).join(Consult).where(Consult.ref == ref)
        .execution_options(populate_existing=True)
    )
    return {o.specialist_id: o.status for o in rows}


def appointments_of(ref: str) -> list[Appointment]:
    return list(db.session.scalars(
        select(Appointment).join(Consult, Consult.id == Appointment.consult_id)
        .where(Consult.ref == ref).execution_options(populate_existing=True)
    ))


def audit(action: str, ref: str | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.action == action)
    if ref is not None:
        query = query.join(Consult, Consult.id == AuditEvent.consult_id).where(Consult.ref == ref)
    return list(db.session.scalars(query.order_by(AuditEvent.id)))


def count(model) -> int:
    return len(db.session.scalars(select(model)).all())


@pytest.fixture
def w(make):
    """A small world: a county hospital paired with a city hospital, two cardiologists."""
    home = make.facility("Longxi County Hospital")
    partner = make.facility("Lanzhou University Second Hospital")
    elsewhere = make.facility("Xi'an Heart Centre")
    make.partnership(home, partner)
    return SimpleNamespace(
        home=home,
        doctor=make.rural(facility=home, name="Dr Rural"),
        other_doctor=make.rural(facility=home, name="Dr Colleague"),
        partner=make.specialist(facility=partner, name="Dr Partner"),
        outsider=make.specialist(facility=elsewhere, name="Dr Elsewhere"),
        neuro=make.specialist(facility=partner, specialty="neurology", name="Dr Neuro"),
        coordinator=make.coordinator(name="Coordinator"),
    )


# --- create_draft -------------------------------------------------------------------------


def test_create_draft_stores_the_case_for_its_requester(make, w):
    draft = consults.create_draft(w.doctor, make.case(chief_complaint="  Chest pain  ",
                                                      urgency=Urgency.EMERGENCY))
    c = stored(draft.ref)
    assert c.status == ConsultStatus.DRAFT
    assert c.requester_id == w.doctor.id
    assert c.specialist_id is None and c.submitted_at is None
    assert c.chief_complaint == "Chest pain"
    assert c.urgency == Urgency.EMERGENCY and c.patient_sex == Sex.MALE and c.patient_age_years == 60
    assert len(c.ref) >= 16
    assert offer_states(c.ref) == {}
    assert [e.actor_id for e in audit("consult.created", c.ref)] == [w.doctor.id]


def test_only_rural_doctors_create_drafts(make, w):
    for user in (w.partner, w.coordinator):
        refused(Forbidden, consults.create_draft, user, make.case())
    assert count(Consult) == 0


def test_create_draft_refuses_an_unknown_specialty(make, w):
    exc = refused(ValidationFailed, consults.create_draft, w.doctor, make.case(specialty="astrology"))
    assert exc.fields == {"specialty": "unknown"}
    assert count(Consult) == 0


# --- update_case --------------------------------------------------------------------------


def test_requester_edits_a_draft_which_may_stay_incomplete(make, w):
    draft = make.draft(w.doctor)
    consults.update_case(w.doctor, draft.ref, make.case(question="", history="  New history  "))
    c = stored(draft.ref)
    assert (c.status, c.question, c.history) == (ConsultStatus.DRAFT, "", "New history")
    assert len(audit("consult.edited", draft.ref)) == 1


def test_only_the_requester_edits_the_case(make, w):
    c = make.requested(w.doctor)
    refused(NotFound, consults.update_case, w.other_doctor, c.ref, make.case(history="hijacked"))
    refused(Forbidden, consults.update_case, w.partner, c.ref, make.case(history="hijacked"))
    refused(Forbidden, consults.update_case, w.coordinator, c.ref, make.case(history="hijacked"))
    assert stored(c.ref).history == "Three weeks of exertional chest pain."
    denied = audit("consult.access_denied", c.ref)
    assert [(e.actor_id, e.detail) for e in denied] == [(w.other_doctor.id, {"action": "edit"})]


def test_a_submitted_request_can_be_edited_but_must_stay_complete(make, w):
    c = make.requested(w.doctor)
    consults.update_case(w.doctor, c.ref, make.case(findings="Troponin rising"))
    assert stored(c.ref).findings == "Troponin rising"

    exc = refused(ValidationFailed, consults.update_case, w.doctor, c.ref,
                  make.case(question="   ", patient_age_years=None))
    assert exc.fields == {"patient_age_years": "required", "question": "required"}
    assert "the patient's age" in exc.message and "your question for the specialist" in exc.message
    after = stored(c.ref)
    assert after.status == ConsultStatus.REQUESTED
    assert after.question == "Angiography or medical management?"
    assert after.patient_age_years == 60
    assert after.findings == "Troponin rising"


def test_the_case_is_frozen_once_a_specialist_has_it(make, w):
    c = make.accepted(w.doctor, w.partner)
    refused(Forbidden, consults.update_case, w.doctor, c.ref, make.case(history="changed"))
    after = stored(c.ref)
    assert after.history == "Three weeks of exertional chest pain."
    assert after.status == ConsultStatus.ACCEPTED


# --- submit --------------------------------------------------------------------------------


def test_submit_lists_every_missing_field_and_keeps_the_draft(make, w):
    draft = consults.create_draft(w.doctor, consults.CaseData(specialty="cardiology",
                                                              chief_complaint="Palpitations"))
    exc = refused(ValidationFailed, consults.submit, w.doctor, draft.ref)
    assert exc.fields == {"patient_age_years": "required", "patient_sex": "required",
                          "history": "required", "question": "required"}
    for name in ("the patient's age", "the patient's sex", "the history",
                 "your question for the specialist"):
        assert name in exc.message
    assert "chief complaint" not in exc.message and "specialty" not in exc.message
    assert stored(draft.ref).status == ConsultStatus.DRAFT
    assert offer_states(draft.ref) == {}


def test_create_and_submit_refuses_an_incomplete_request_and_stores_nothing(make, w):
    # Issue 10: "Send request" on the new-request page once left an "Untitled draft" per attempt.
    for _ in range(2):
        exc = refused(ValidationFailed, consults.create_and_submit, w.doctor,
                      consults.CaseData(chief_complaint="Palpitations", history="   "))
        assert exc.fields == {"specialty": "required", "patient_age_years": "required",
                              "patient_sex": "required", "history": "required", "question": "required"}
    assert count(Consult) == 0 and count(AuditEvent) == 0


def test_create_and_submit_files_and_offers_a_complete_request_at_once(make, w):
    c = consults.create_and_submit(w.doctor, make.case())
    after = stored(c.ref)
    assert after.status == ConsultStatus.REQUESTED and after.submitted_at is not None
    assert offer_states(c.ref) == offer_states(make.requested(w.doctor).ref)
    assert [e.actor_id for e in audit("consult.created", c.ref)] == [w.doctor.id]
    assert len(audit("consult.submitted", c.ref)) == 1
    refused(Forbidden, consults.create_and_submit, w.partner, make.case())


def test_submit_offers_the_request_partner_hospital_first(make, w):
    c = make.requested(w.doctor)
    after = stored(c.ref)
    assert after.status == ConsultStatus.REQUESTED
    assert after.submitted_at is not None
    offers = list(db.session.scalars(
        select(ConsultOffer).where(ConsultOffer.consult_id == after.id).order_by(ConsultOffer.rank)
    ))
    assert [(o.specialist_id, o.rank, o.is_partner, o.status) for o in offers] == [
        (w.partner.id, 1, True, OfferStatus.OFFERED),
        (w.outsider.id, 2, False, OfferStatus.OFFERED),
    ]
    assert audit("consult.submitted", c.ref)[0].detail == {"offered_to": [w.partner.id, w.outsider.id]}


def test_submit_with_nobody_eligible_still_reaches_the_coordinator_queue(make, w):
    c = make.requested(w.doctor, specialty="dermatology")
    assert stored(c.ref).status == ConsultStatus.REQUESTED
    assert offer_states(c.ref) == {}
    assert [q.ref for q in consults.unassigned_queue()] == [c.ref]


def test_submit_only_once_and_only_by_the_requester(make, w):
    draft = make.draft(w.doctor)
    refused(NotFound, consults.submit, w.other_doctor, draft.ref)
    refused(Forbidden, consults.submit, w.coordinator, draft.ref)
    assert stored(draft.ref).status == ConsultStatus.DRAFT
    consults.submit(w.doctor, draft.ref)
    exc = refused(InvalidTransition, consults.submit, w.doctor, draft.ref)
    assert exc.message == f"You cannot {EVENT_VERBS[Event.SUBMIT]} a consult whose status is “Awaiting specialist”."
    assert len(offer_states(draft.ref)) == 2


# --- accept --------------------------------------------------------------------------------


def test_first_accept_wins_and_withdraws_the_other_offers(make, w):
    c = make.requested(w.doctor)
    consults.accept(w.partner, c.ref)

    exc = refused(Conflict, consults.accept, w.outsider, c.ref)
    assert "no longer open" in exc.message
    after = stored(c.ref)
    assert after.status == ConsultStatus.ACCEPTED
    assert after.specialist_id == w.partner.id
    assert after.accepted_at is not None
    assert offer_states(c.ref) == {w.partner.id: OfferStatus.ACCEPTED,
                                   w.outsider.id: OfferStatus.WITHDRAWN}
    assert appointments_of(c.ref) == []
    assert [e.actor_id for e in audit("consult.accepted", c.ref)] == [w.partner.id]
    assert audit("consult.access_denied") == []  # the loser was offered it: a conflict, not a probe


def test_accept_is_refused_to_specialists_never_offered_the_request(make, w):
    c = make.requested(w.doctor)
    refused(NotFound, consults.accept, w.neuro, c.ref)
    assert stored(c.ref).status == ConsultStatus.REQUESTED
    assert [(e.actor_id, e.detail) for e in audit("consult.access_denied", c.ref)] == [
        (w.neuro.id, {"action": "accept"})]


def test_accept_with_a_slot_books_it_and_schedules_the_consult(make, w):
    make.availability(w.partner, hours=(9, 12))
    slot = scheduling.open_slots(w.partner)[0]
    c = make.requested(w.doctor)

    consults.accept(w.partner, c.ref, slot.starts_at)

    assert stored(c.ref).status == ConsultStatus.SCHEDULED
    [appt] = appointments_of(c.ref)
    assert (appt.starts_at, appt.ends_at) == (slot.starts_at, slot.ends_at)
    assert appt.specialist_id == w.partner.id and appt.booked_by_id == w.partner.id
    blocks = db.session.scalars(select(BookedBlock.block_start).where(
        BookedBlock.appointment_id == appt.id).order_by(BookedBlock.block_start)).all()
    assert blocks == [slot.starts_at, slot.starts_at + timedelta(minutes=15)]
    assert audit("consult.accepted", c.ref)[0].detail == {"starts_at": slot.starts_at.isoformat()}


def test_accept_with_a_slot_outside_availability_changes_nothing(make, w):
    make.availability(w.partner, hours=(9, 10))  # Asia/Shanghai mornings only
    first = scheduling.open_slots(w.partner)[0]
    outside = first.starts_at + timedelta(hours=3)
    c = make.requested(w.doctor)

    exc = refused(ValidationFailed, consults.accept, w.partner, c.ref, outside)
    assert "outside the specialist's availability" in exc.message

    after = stored(c.ref)
    assert after.status == ConsultStatus.REQUESTED
    assert after.specialist_id is None and after.accepted_at is None
    assert offer_states(c.ref) == {w.partner.id: OfferStatus.OFFERED,
                                   w.outsider.id: OfferStatus.OFFERED}
    assert count(Appointment) == 0 and count(BookedBlock) == 0
    assert audit("consult.accepted") == []
    # and the request is still open: a valid slot works afterwards
    consults.accept(w.partner, c.ref, first.starts_at)
    assert stored(c.ref).status == ConsultStatus.SCHEDULED


@pytest.mark.parametrize("clash", ["outside-availability", "already-booked"])
def test_a_failed_accept_with_a_slot_leaves_nothing_for_a_later_commit(make, w, clash):
    """Accepting and booking are one step: if the slot fails, the acceptance is not half-kept,
    even when the caller goes on in the same session without rolling back."""
    make.availability(w.partner, hours=(9, 10))
    first = scheduling.open_slots(w.partner)[0]
    if clash == "already-booked":
        earlier = make.requested(w.doctor)
        consults.accept(w.partner, earlier.ref, first.starts_at)
        wanted, error = first.starts_at, Conflict
    else:
        wanted, error = first.starts_at + timedelta(hours=3), ValidationFailed
    c = make.requested(w.doctor)

    with pytest.raises(error):
        consults.accept(w.partner, c.ref, wanted)
    consults.view_consult(w.doctor, c.ref)  # commits its own audit entry

    after = stored(c.ref)
    assert (after.status, after.specialist_id) == (ConsultStatus.REQUESTED, None)
    assert set(offer_states(c.ref).values()) == {OfferStatus.OFFERED}
    assert appointments_of(c.ref) == []
    assert count(Appointment) == (1 if clash == "already-booked" else 0)


# --- decline and assign ----------------------------------------------------------------------


def test_decline_needs_a_reason(make, w):
    c = make.requested(w.doctor)
    exc = refused(ValidationFailed, consults.decline, w.partner, c.ref, "   ")
    assert exc.fields == {"reason": "required"}
    assert offer_states(c.ref)[w.partner.id] == OfferStatus.OFFERED


def test_last_decline_flags_the_request_and_a_coordinator_assigns_it(make, w):
    c = make.requested(w.doctor)
    consults.decline(w.partner, c.ref, "  On leave this week  ")
    assert stored(c.ref).status == ConsultStatus.REQUESTED
    offer = db.session.scalars(select(ConsultOffer).where(
        ConsultOffer.specialist_id == w.partner.id)).one()
    assert (offer.status, offer.decline_reason) == (OfferStatus.DECLINED, "On leave this week")
    assert offer.responded_at is not None
    refused(Conflict, consults.decline, w.partner, c.ref, "again")

    consults.decline(w.outsider, c.ref, "Not my subspecialty")
    assert stored(c.ref).status == ConsultStatus.DECLINED
    assert [q.ref for q in consults.unassigned_queue()] == [c.ref]
    assert [e.detail["reason"] for e in audit("consult.declined", c.ref)] == [
        "On leave this week", "Not my subspecialty"]

    consults.assign(w.coordinator, c.ref, w.outsider.id)
    after = stored(c.ref)
    assert after.status == ConsultStatus.ACCEPTED
    assert after.specialist_id == w.outsider.id
    assert after.assigned_by_id == w.coordinator.id
    assert offer_states(c.ref) == {w.partner.id: OfferStatus.DECLINED,
                                   w.outsider.id: OfferStatus.ACCEPTED}
    assert consults.unassigned_queue() == []


def test_only_coordinators_assign(make, w):
    c = make.requested(w.doctor)
    for user in (w.doctor, w.partner):
        refused(Forbidden, consults.assign, user, c.ref, w.partner.id)
    assert stored(c.ref).status == ConsultStatus.REQUESTED


def test_assign_only_to_approved_specialists(make, w):
    c = make.requested(w.doctor)
    pending = make.specialist(status=AccountStatus.PENDING)
    suspended = make.specialist(status=AccountStatus.SUSPENDED)
    for candidate in (pending.id, suspended.id, w.doctor.id, w.coordinator.id, 999_999):
        exc = refused(ValidationFailed, consults.assign, w.coordinator, c.ref, candidate)
        assert exc.fields == {"specialist_id": "invalid"}
    after = stored(c.ref)
    assert (after.status, after.specialist_id) == (ConsultStatus.REQUESTED, None)


def test_assign_to_a_specialist_not_offered_creates_the_accepted_offer(make, w):
    c = make.requested(w.doctor)
    consults.assign(w.coordinator, c.ref, w.neuro.id)
    assert stored(c.ref).specialist_id == w.neuro.id
    assert offer_states(c.ref) == {w.partner.id: OfferStatus.WITHDRAWN,
                                   w.outsider.id: OfferStatus.WITHDRAWN,
                                   w.neuro.id: OfferStatus.ACCEPTED}
    refused(InvalidTransition, consults.assign, w.coordinator, c.ref, w.partner.id)
    assert stored(c.ref).specialist_id == w.neuro.id


# --- book ----------------------------------------------------------------------------------


def test_either_party_books_once_the_consult_is_accepted(make, w):
    make.availability(w.partner)
    slot = scheduling.open_slots(w.partner)[0]
    c = make.requested(w.doctor)
    refused(Forbidden, consults.book, w.doctor, c.ref, slot.starts_at)  # not accepted yet
    consults.accept(w.partner, c.ref)

    consults.book(w.doctor, c.ref, slot.starts_at)

    assert stored(c.ref).status == ConsultStatus.SCHEDULED
    [appt] = appointments_of(c.ref)
    assert (appt.starts_at, appt.booked_by_id) == (slot.starts_at, w.doctor.id)
    # scheduled: no second booking
    later = scheduling.open_slots(w.partner)[0]
    refused(Forbidden, consults.book, w.partner, c.ref, later.starts_at)
    assert len(appointments_of(c.ref)) == 1


def test_only_the_parties_book(make, w):
    make.availability(w.partner)
    slot = scheduling.open_slots(w.partner)[0]
    c = make.accepted(w.doctor, w.partner)
    refused(Forbidden, consults.book, w.coordinator, c.ref, slot.starts_at)
    refused(NotFound, consults.book, w.other_doctor, c.ref, slot.starts_at)
    refused(NotFound, consults.book, w.outsider, c.ref, slot.starts_at)  # its offer was withdrawn
    assert stored(c.ref).status == ConsultStatus.ACCEPTED
    assert count(Appointment) == 0


# --- the recommendation -------------------------------------------------------------------------


def test_a_draft_answer_is_saved_without_completing_the_consult(make, w):
    c = make.accepted(w.doctor, w.partner)
    consults.save_recommendation(w.partner, c.ref, consults.RecommendationData(
        assessment="  Probably angina  ", refer_reason="ignored unless referring"), sign=False)
    consults.save_recommendation(w.partner, c.ref, consults.RecommendationData(
        assessment="Angina", plan="Aspirin"), sign=False)

    [rec] = db.session.scalars(select(Recommendation)).all()
    assert (rec.assessment, rec.plan, rec.refer_reason) == ("Angina", "Aspirin", "")
    assert rec.signed_at is None and rec.content_sha256 is None
    assert rec.mode == ConsultMode.WRITTEN and rec.author_id == w.partner.id
    assert stored(c.ref).status == ConsultStatus.ACCEPTED
    assert len(audit("recommendation.draft_saved", c.ref)) == 2
    assert not consults.verify_signature(rec)


def test_signing_needs_assessment_plan_and_a_reason_to_refer(make, w):
    c = make.accepted(w.doctor, w.partner)
    exc = refused(ValidationFailed, consults.save_recommendation, w.partner, c.ref,
                  consults.RecommendationData(assessment="  "), sign=True)
    assert exc.fields == {"assessment": "required", "plan": "required"}
    exc = refused(ValidationFailed, consults.save_recommendation, w.partner, c.ref,
                  consults.RecommendationData(assessment="A", plan="P", refer_up=True,
                                              refer_reason=" "), sign=True)
    assert exc.fields == {"refer_reason": "required"}
    assert "reason for referral" in exc.message
    assert stored(c.ref).status == ConsultStatus.ACCEPTED
    assert count(Recommendation) == 0


def test_signing_from_accepted_is_a_written_answer_and_locks_the_consult(make, w):
    c = make.accepted(w.doctor, w.partner)
    consults.save_recommendation(w.partner, c.ref, consults.RecommendationData(
        assessment="NSTEMI", plan="Transfer", refer_up=True, refer_reason="Needs PCI"), sign=True)

    after = stored(c.ref)
    assert after.status == ConsultStatus.COMPLETED and after.completed_at is not None
    db.session.expire_all()
    rec = db.session.scalars(select(Recommendation)).one()
    assert rec.mode == ConsultMode.WRITTEN
    assert rec.signed_at == after.completed_at
    assert (rec.refer_up, rec.refer_reason) == (True, "Needs PCI")
    assert len(rec.content_sha256) == 64
    assert consults.verify_signature(rec)
    assert audit("consult.signed", c.ref)[0].detail == {
        "mode": "written", "refer_up": True, "sha256": rec.content_sha256}

    for sign in (False, True):
        refused(Forbidden, consults.save_recommendation, w.partner, c.ref,
                consults.RecommendationData(assessment="changed", plan="changed"), sign=sign)
    db.session.expire_all()
    rec = db.session.scalars(select(Recommendation)).one()
    assert (rec.assessment, rec.plan) == ("NSTEMI", "Transfer")
    assert consults.verify_signature(rec)


def test_signing_after_a_connected_call_is_a_video_consult(make, w):
    from webapp.video import services as video

    c = make.scheduled(w.doctor, w.partner)
    video.record_stats(w.doctor, stored(c.ref), {"connected": True, "setup_ms": 900})
    rec = consults.save_recommendation(w.partner, c.ref, ANSWER, sign=True)
    assert rec.mode == ConsultMode.VIDEO
    assert stored(c.ref).status == ConsultStatus.COMPLETED


def test_signing_a_booked_consult_without_any_call_is_a_written_answer(make, w):
    c = make.scheduled(w.doctor, w.partner)
    rec = consults.save_recommendation(w.partner, c.ref, ANSWER, sign=True)
    assert rec.mode == ConsultMode.WRITTEN  # the record never claims a call that did not happen
    assert stored(c.ref).status == ConsultStatus.COMPLETED


def test_a_tampered_signed_answer_no_longer_verifies(make, w):
    c = make.accepted(w.doctor, w.partner)
    consults.save_recommendation(w.partner, c.ref, ANSWER, sign=True)
    db.session.execute(update(Recommendation).values(plan="Discharge home."))
    db.session.commit()
    db.session.expire_all()
    rec = db.session.scalars(select(Recommendation)).one()
    assert rec.plan == "Discharge home."
    assert not consults.verify_signature(rec)


def test_only_the_consults_own_specialist_answers(make, w):
    requested = make.requested(w.doctor)
    refused(Forbidden, consults.save_recommendation, w.partner, requested.ref, ANSWER, sign=False)
    c = make.accepted(w.doctor, w.partner)
    refused(Forbidden, consults.save_recommendation, w.doctor, c.ref, ANSWER, sign=True)
    refused(NotFound, consults.save_recommendation, w.outsider, c.ref, ANSWER, sign=True)
    assert stored(c.ref).status == ConsultStatus.ACCEPTED
    assert count(Recommendation) == 0


# --- acknowledge ---------------------------------------------------------------------------------


def test_acknowledge_only_by_the_requester_only_once_only_after_signing(make, w):
    c = make.accepted(w.doctor, w.partner)
    refused(Conflict, consults.acknowledge, w.doctor, c.ref)  # nothing yet
    consults.save_recommendation(w.partner, c.ref, ANSWER, sign=False)
    refused(Conflict, consults.acknowledge, w.doctor, c.ref)  # a draft only
    consults.save_recommendation(w.partner, c.ref, ANSWER, sign=True)
    refused(Forbidden, consults.acknowledge, w.partner, c.ref)
    refused(Forbidden, consults.acknowledge, w.coordinator, c.ref)
    refused(NotFound, consults.acknowledge, w.other_doctor, c.ref)

    consults.acknowledge(w.doctor, c.ref)
    exc = refused(Conflict, consults.acknowledge, w.doctor, c.ref)
    assert "already acknowledged" in exc.message

    db.session.expire_all()
    rec = db.session.scalars(select(Recommendation)).one()
    assert rec.acknowledged_by_id == w.doctor.id and rec.acknowledged_at is not None
    assert consults.verify_signature(rec)  # acknowledging does not break the signature
    assert len(audit("consult.acknowledged", c.ref)) == 1


# --- cancel ------------------------------------------------------------------------------------------


def test_cancel_needs_a_reason(make, w):
    c = make.requested(w.doctor)
    exc = refused(ValidationFailed, consults.cancel, w.doctor, c.ref, " ")
    assert exc.fields == {"reason": "required"}
    assert stored(c.ref).status == ConsultStatus.REQUESTED


def test_cancel_withdraws_open_offers(make, w):
    c = make.requested(w.doctor)
    consults.cancel(w.doctor, c.ref, "  Patient transferred  ")
    after = stored(c.ref)
    assert after.status == ConsultStatus.CANCELLED
    assert after.cancel_reason == "Patient transferred" and after.cancelled_at is not None
    assert set(offer_states(c.ref).values()) == {OfferStatus.WITHDRAWN}
    assert consults.offers_for(w.partner) == []
    assert consults.unassigned_queue() == []


def test_cancel_releases_the_booked_slot_for_another_consult(make, w):
    c = make.scheduled(w.doctor, w.partner)
    [appt] = appointments_of(c.ref)
    starts_at = appt.starts_at
    assert starts_at not in {s.starts_at for s in scheduling.open_slots(w.partner)}

    consults.cancel(w.coordinator, c.ref, "Specialist unavailable")

    after = stored(c.ref)
    assert after.status == ConsultStatus.CANCELLED
    assert after.appointment is None
    [appt] = appointments_of(c.ref)
    assert appt.cancelled_at is not None
    assert count(BookedBlock) == 0
    assert starts_at in {s.starts_at for s in scheduling.open_slots(w.partner)}

    again = make.accepted(w.other_doctor, w.partner)
    consults.book(w.other_doctor, again.ref, starts_at)
    assert stored(again.ref).status == ConsultStatus.SCHEDULED
    assert count(BookedBlock) == 2


def test_cancel_is_for_the_requester_or_a_coordinator_before_the_answer(make, w):
    c = make.accepted(w.doctor, w.partner)
    refused(Forbidden, consults.cancel, w.partner, c.ref, "Too busy")
    refused(NotFound, consults.cancel, w.other_doctor, c.ref, "Mine now")
    consults.save_recommendation(w.partner, c.ref, ANSWER, sign=True)
    for user in (w.doctor, w.coordinator):
        refused(Forbidden, consults.cancel, user, c.ref, "Too late")
    after = stored(c.ref)
    assert after.status == ConsultStatus.COMPLETED and after.cancelled_at is None


def test_a_draft_can_be_cancelled(make, w):
    c = make.draft(w.doctor)
    consults.cancel(w.doctor, c.ref, "Filed by mistake")
    assert stored(c.ref).status == ConsultStatus.CANCELLED
    refused(InvalidTransition, consults.submit, w.doctor, c.ref)


# --- who may see a consult -------------------------------------------------------------------------


def test_a_stranger_specialist_gets_not_found_and_the_attempt_is_audited(make, w):
    c = make.requested(w.doctor)
    exc = refused(NotFound, consults.view_consult, w.neuro, c.ref)
    assert exc.status == 404 and exc.message == "No such consult."
    [event] = audit("consult.access_denied")
    assert (event.actor_id, event.actor_email) == (w.neuro.id, w.neuro.email)
    assert event.consult_id == stored(c.ref).id
    assert event.detail == {"action": "view"}
    assert audit("consult.viewed") == []


def test_an_offered_specialist_sees_the_request_only_while_the_offer_is_open(make, w):
    c = make.requested(w.doctor)
    assert consults.view_consult(w.outsider, c.ref).ref == c.ref
    assert [e.actor_id for e in audit("consult.viewed", c.ref)] == [w.outsider.id]

    consults.accept(w.partner, c.ref)

    refused(NotFound, consults.view_consult, w.outsider, c.ref)
    assert [e.actor_id for e in audit("consult.access_denied", c.ref)] == [w.outsider.id]
    assert consults.view_consult(w.partner, c.ref).ref == c.ref


def test_parties_and_coordinators_see_the_consult_others_do_not(make, w):
    c = make.accepted(w.doctor, w.partner)
    for user in (w.doctor, w.partner, w.coordinator):
        assert consults.view_consult(user, c.ref).id == stored(c.ref).id
    refused(NotFound, consults.view_consult, w.other_doctor, c.ref)
    refused(NotFound, consults.view_consult, w.doctor, "no-such-reference")
    assert len(audit("consult.viewed", c.ref)) == 3
    assert len(audit("consult.access_denied", c.ref)) == 1


# --- dashboards --------------------------------------------------------------------------------------


def test_requests_of_lists_only_own_consults_newest_first(make, w):
    first = make.draft(w.doctor)
    second = make.requested(w.doctor)
    third = make.accepted(w.doctor, w.partner)
    make.draft(w.other_doctor)
    assert [c.ref for c in consults.requests_of(w.doctor)] == [third.ref, second.ref, first.ref]
    assert consults.requests_of(w.partner) == []


def test_offers_for_puts_emergencies_first_then_the_longest_waiting(make, w):
    routine_old = make.requested(w.doctor, urgency=Urgency.ROUTINE)
    urgent = make.requested(w.doctor, urgency=Urgency.URGENT)
    emergency_old = make.requested(w.doctor, urgency=Urgency.EMERGENCY)
    routine_new = make.requested(w.doctor, urgency=Urgency.ROUTINE)
    emergency_new = make.requested(w.doctor, urgency=Urgency.EMERGENCY)
    taken = make.accepted(w.doctor, w.partner, urgency=Urgency.EMERGENCY)
    declined = make.requested(w.doctor, urgency=Urgency.EMERGENCY)
    consults.decline(w.outsider, declined.ref, "Away")
    make.draft(w.doctor, urgency=Urgency.EMERGENCY)

    assert [c.ref for c in consults.offers_for(w.outsider)] == [
        emergency_old.ref, emergency_new.ref, urgent.ref, routine_old.ref, routine_new.ref]
    assert taken.ref not in {c.ref for c in consults.offers_for(w.partner)}
    assert consults.offers_for(w.neuro) == []


def test_unassigned_queue_holds_requested_and_declined_most_urgent_first(make, w):
    routine = make.requested(w.doctor, urgency=Urgency.ROUTINE, specialty="dermatology")
    declined = make.requested(w.doctor, urgency=Urgency.URGENT)
    consults.decline(w.partner, declined.ref, "Away")
    consults.decline(w.outsider, declined.ref, "Away too")
    emergency = make.requested(w.doctor, urgency=Urgency.EMERGENCY)
    make.draft(w.doctor)
    make.accepted(w.doctor, w.partner, urgency=Urgency.EMERGENCY)
    cancelled = make.requested(w.doctor)
    consults.cancel(w.doctor, cancelled.ref, "Resolved")

    assert [c.ref for c in consults.unassigned_queue()] == [emergency.ref, declined.ref, routine.ref]
    assert stored(declined.ref).status == ConsultStatus.DECLINED
