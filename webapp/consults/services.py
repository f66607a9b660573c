"""Consult use cases: request, match, accept, book, answer, acknowledge, cancel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, BinaryIO

from babel.lists import format_list
from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from ..audit.services import record, record_now, record_refusal
from ..errors import Conflict, DomainError, Forbidden, NotFound, ValidationFailed
from ..extensions import db
from ..files import services as files
from ..i18n import N_, current_locale, translate
from ..models import (
    SPECIALTIES,
    AccountStatus,
    Attachment,
    CallSession,
    Consult,
    ConsultMode,
    ConsultOffer,
    ConsultParticipant,
    ConsultStatus,
    OfferStatus,
    ParticipantRole,
    Recommendation,
    Role,
    RoomCounter,
    Sex,
    Urgency,
    User,
    utcnow,
)
from ..notifications.services import notify
from ..scheduling import services as scheduling
from ..sessionbus import recheck_consult
from ..validation import text_problem
from . import hooks, policy, signing
from .matching import eligible_specialists
from .policy import Action
from .state import Event, apply


@dataclass
class CaseData:
    """The structured case a rural doctor fills in."""

    specialty: str | None = None
    urgency: Urgency = Urgency.ROUTINE
    patient_age_years: int | None = None
    patient_sex: Sex | None = None
    chief_complaint: str = ""
    history: str = ""
    findings: str = ""
    current_treatment: str = ""
    question: str = ""
    preferred_times: str = ""
    bp_systolic: int | None = None
    bp_diastolic: int | None = None
    heart_rate: int | None = None
    respiratory_rate: int | None = None
    temperature_c: Decimal | None = None
    spo2: int | None = None
    weight_kg: Decimal | None = None


REQUIRED_TO_SUBMIT = {  # each field needed to send, named as in "fill in ..." (translated where shown)
    "specialty": N_("the specialty needed"),
    "patient_age_years": N_("the patient's age"),
    "patient_sex": N_("the patient's sex"),
    "chief_complaint": N_("the chief complaint"),
    "history": N_("the history"),
    "question": N_("your question for the specialist"),
}

# What a user may not do to a consult now, by the action's name (one msgid per action).
FORBIDDEN_ACTIONS = {
    "edit": N_("You cannot edit this consult now."),
    "submit": N_("You cannot submit this consult now."),
    "attach files to": N_("You cannot attach files to this consult now."),
    "book a time for": N_("You cannot book a time for this consult now."),
    "reschedule": N_("You cannot reschedule this consult now."),
    "cancel": N_("You cannot cancel this consult now."),
    "answer": N_("You cannot answer this consult now."),
    "acknowledge": N_("You cannot acknowledge this consult now."),
}
FORBIDDEN_OTHER = N_("You cannot do that to this consult now.")


def listing(items: list[str]) -> str:
    """Translated phrases joined as a list in the current language ("a, b and c" / "a、b和c")."""
    locale = current_locale()
    if locale == "en":  # the house style: no comma before "and"
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return format_list(items, locale=locale)


@dataclass
class RecommendationData:
    """The specialist's structured answer."""

    assessment: str = ""
    plan: str = ""
    refer_up: bool = False
    refer_reason: str = ""
    follow_up: str = ""


# --- loading with permissions -------------------------------------------------------------


def by_ref(ref: str, *, lock: bool = False) -> Consult:
    """The consult with this reference (locked for update if asked), or NotFound."""
    query = select(Consult).where(Consult.ref == ref)
    if lock:
        query = query.with_for_update()
    consult = db.session.scalar(query)
    if consult is None:
        raise NotFound("No such consult.")
    return consult


def consult_for(user: User, ref: Any, may: Callable[[User, Consult], bool], refusal: str) -> Consult:
    """The consult a socket event or page names by reference, if may(user, consult); else NotFound,
    the refusal audited under `refusal` (a hidden consult and an unknown reference look the same)."""
    if not isinstance(ref, str) or not ref or len(ref) > 32 or text_problem(ref):
        raise ValidationFailed("A consult reference is required.")
    consult = by_ref(ref)
    if not may(user, consult):
        record_refusal(refusal, actor=user, consult=consult)
        raise NotFound("No such consult.")
    return consult


def _deny(user: User, consult: Consult, action: str) -> NotFound:
    record_refusal("consult.access_denied", actor=user, consult=consult, detail={"action": action})
    return NotFound("No such consult.")


def view_consult(user: User, ref: str) -> Consult:
    """A consult its viewer may see; the view is audited, a refusal too (as 404)."""
    consult = by_ref(ref)
    if not policy.can_view(user, consult):
        raise _deny(user, consult, "view")
    record_now("consult.viewed", actor=user, consult=consult)
    return consult


def check_visible(user: User, ref: str, action: str, *, lock: bool = False) -> Consult:
    """The consult if the user may see it (locked for update if asked); otherwise the same audited
    404 as view_consult."""
    consult = by_ref(ref, lock=lock)
    if not policy.can_view(user, consult):
        raise _deny(user, consult, action)
    return consult


def review_offer(specialist: User, ref: str) -> Consult:
    """The request a specialist opens to accept or decline it (the view is audited).

    A specialist it was offered to, who may no longer see it (another specialist took it, or
    they declined), is told so (409) rather than shown a bare 404.
    """
    consult = by_ref(ref)
    if not policy.can_view(specialist, consult):
        if _was_offered(specialist, consult):
            raise Conflict("This request is no longer open to you; another specialist may have taken it.")
        raise _deny(specialist, consult, "view")
    record_now("consult.viewed", actor=specialist, consult=consult)
    return consult


def _for_action(user: User, ref: str, allowed, action: str, *, lock: bool = False) -> Consult:
    consult = by_ref(ref, lock=lock)
    if not policy.can_view(user, consult):
        raise _deny(user, consult, action)
    if not allowed(user, consult):
        message = FORBIDDEN_ACTIONS.get(action, FORBIDDEN_OTHER)
        raise Forbidden(message)
    return consult


def _parties(consult: Consult) -> list[User]:
    return policy.participant_users(consult)


def _notify_booked(consult: Consult, by: User, starts_at: datetime) -> None:
    """Both parties but the one who booked learn the time (shown in UTC ISO form; the page localises)."""
    notify(_parties(consult), "consult.booked", {"by": by.full_name, "starts_at": starts_at.isoformat()},
           consult=consult, exclude=by)


def _commit_or_conflict(message: str) -> None:
    try:
        db.session.commit()
    except StaleDataError:
        db.session.rollback()
        raise Conflict(message) from None


# --- the request --------------------------------------------------------------------------


def _apply_case(consult: Consult, data: CaseData) -> None:
    if data.specialty is not None and data.specialty not in SPECIALTIES:
        raise ValidationFailed("Choose a specialty from the list.", fields={"specialty": "unknown"})
    for key, value in asdict(data).items():
        setattr(consult, key, value.strip() if isinstance(value, str) else value)


def _new_draft(requester: User, data: CaseData) -> Consult:
    if requester.role != Role.RURAL_DOCTOR:
        raise Forbidden("Only rural doctors file consult requests.")
    consult = Consult(requester_id=requester.id, status=ConsultStatus.DRAFT)
    _apply_case(consult, data)
    return consult


def _add_draft(requester: User, consult: Consult) -> None:
    db.session.add(consult)
    db.session.flush()
    now = utcnow()
    consult.participants.append(ConsultParticipant(
        user=requester, user_id=requester.id, role=ParticipantRole.REQUESTER, added_by=requester, added_at=now,
        accepted_at=now))
    # the chat's counter comes with the consult: its first message takes the one-statement fast path
    db.session.add(RoomCounter(consult_id=consult.id, last_seq=0))
    record("consult.created", actor=requester, consult=consult)


def create_draft(requester: User, data: CaseData) -> Consult:
    """Start a consult request as a draft owned by the rural doctor."""
    consult = _new_draft(requester, data)
    _add_draft(requester, consult)
    db.session.commit()
    return consult


def create_and_submit(requester: User, data: CaseData) -> Consult:
    """File a new request and send it at once; an incomplete one is refused and nothing is stored."""
    consult = _new_draft(requester, data)
    _check_complete(consult)  # before the consult joins the session: a refusal stores no draft
    _add_draft(requester, consult)
    _send(requester, consult)
    _commit_or_conflict("The consult changed while you were submitting it. Reload and try again.")
    return consult


def update_case(requester: User, ref: str, data: CaseData) -> Consult:
    """Edit the case while no specialist has taken it yet."""
    consult = _for_action(requester, ref, policy.can_edit_case, "edit")
    if consult.status != ConsultStatus.DRAFT and data.specialty != consult.specialty:
        raise ValidationFailed(
            "The request was already offered to the specialists of its specialty. To ask another "
            "specialty, cancel this request and file a new one.", fields={"specialty": "locked"})
    _apply_case(consult, data)
    if consult.status != ConsultStatus.DRAFT:
        _check_complete(consult)
    record("consult.edited", actor=requester, consult=consult)
    _commit_or_conflict("The consult changed while you were editing it. Reload and try again.")
    return consult


def _check_complete(consult: Consult) -> None:
    missing = {k: "required" for k in REQUIRED_TO_SUBMIT if getattr(consult, k) in (None, "")}
    if missing:
        names = listing([translate(REQUIRED_TO_SUBMIT[k]) for k in missing])
        raise ValidationFailed("Before sending the request, fill in %(names)s.", fields=missing, names=names)


def submit(requester: User, ref: str) -> Consult:
    """Send a complete draft and offer it to the eligible specialists."""
    consult = _for_action(requester, ref, lambda u, c: policy.entitled(u, c, Action.SUBMIT), "submit")
    _check_complete(consult)
    _send(requester, consult)
    _commit_or_conflict("The consult changed while you were submitting it. Reload and try again.")
    return consult


def _send(requester: User, consult: Consult) -> None:
    apply(consult, Event.SUBMIT)
    consult.submitted_at = utcnow()
    candidates = eligible_specialists(consult)
    for rank, cand in enumerate(candidates, start=1):
        db.session.add(ConsultOffer(consult_id=consult.id, specialist_id=cand.specialist.id,
                                    rank=rank, is_partner=cand.is_partner))
    record("consult.submitted", actor=requester, consult=consult,
           detail={"offered_to": [c.specialist.id for c in candidates]})
    urgency = Urgency(consult.urgency)  # a consult filed and sent at once has not been loaded back yet
    notify([c.specialist for c in candidates], "consult.offered",
           {"urgency": urgency.value, "specialty": consult.specialty}, consult=consult,
           urgent=urgency == Urgency.EMERGENCY)


def add_attachment(user: User, ref: str, stream: BinaryIO, filename: str | None,
                   description: str = "") -> Attachment:
    """Check, clean and store a file for the consult; nothing is kept if any step fails."""
    from flask import current_app

    def attachable() -> Consult:
        consult = _for_action(user, ref, policy.can_attach, "attach files to")
        if len(consult.attachments) >= current_app.config["MAX_ATTACHMENTS_PER_CONSULT"]:
            raise ValidationFailed("This consult already has the maximum number of attachments.")
        return consult

    attachable()
    # The content check runs in another process for up to seconds: hold no transaction (on
    # SQLite, no write lock) meanwhile, and check the consult again before writing.
    db.session.commit()
    checked = files.check_upload(stream, filename)
    stored_name = files.store(checked)  # written before the write transaction, removed if it fails
    try:
        consult = attachable()
        attachment = Attachment(
            consult_id=consult.id, uploaded_by_id=user.id, stored_name=stored_name,
            original_name=checked.original_name, content_type=checked.content_type,
            size_bytes=len(checked.data), sha256=checked.sha256, width=checked.width,
            height=checked.height, page_count=checked.page_count,
            description=description.strip()[:200],
        )
        db.session.add(attachment)
        db.session.flush()
        record("attachment.added", actor=user, consult=consult, target=f"attachment:{attachment.id}",
               detail={"type": checked.content_type, "bytes": len(checked.data)})
        db.session.commit()
    except Exception:
        db.session.rollback()
        files.discard(stored_name)
        raise
    return attachment


def open_attachment(user: User, ref: str, attachment_id: int) -> Attachment:
    """An attachment of a consult the user may see; the download is audited."""
    consult = by_ref(ref)
    if not policy.can_view(user, consult):
        raise _deny(user, consult, "attachment")
    attachment = db.session.get(Attachment, attachment_id)
    if attachment is None or attachment.consult_id != consult.id:
        raise NotFound("No such attachment.")
    record_now("attachment.viewed", actor=user, consult=consult, target=f"attachment:{attachment.id}")
    return attachment


# --- routing and acceptance ----------------------------------------------------------------


def accept(specialist: User, ref: str, starts_at: datetime | None = None) -> Consult:
    """A specialist takes an offered request, optionally booking a slot at once."""
    consult = by_ref(ref, lock=True)
    offer = policy.pending_offer(specialist, consult)
    if offer is None:
        if not (policy.can_view(specialist, consult) or _was_offered(specialist, consult)):
            raise _deny(specialist, consult, "accept")
        raise Conflict("This request is no longer open to you; another specialist may have taken it.")
    apply(consult, Event.ACCEPT)
    _take(consult, specialist, offer, by=specialist)
    if starts_at is not None:
        try:
            scheduling.reserve(consult, specialist, starts_at, booked_by=specialist)
        except DomainError:
            db.session.rollback()  # accepting and booking stand or fall together
            raise
        apply(consult, Event.BOOK)
    record("consult.accepted", actor=specialist, consult=consult,
           detail={"starts_at": starts_at.isoformat() if starts_at else None})
    notify(_parties(consult), "consult.accepted", {"by": specialist.full_name}, consult=consult,
           exclude=specialist)
    if starts_at is not None:
        _notify_booked(consult, specialist, starts_at)
    _commit_or_conflict("Another specialist accepted this request a moment ago.")
    return consult


def _was_offered(specialist: User, consult: Consult) -> bool:
    """Whether the request was ever offered to this specialist (they may know it exists)."""
    return any(o.specialist_id == specialist.id for o in consult.offers)


def _take(consult: Consult, specialist: User, offer: ConsultOffer | None, *, by: User) -> None:
    """The specialist becomes the lead participant; `specialist_id` is derived from that row."""
    now = utcnow()
    if policy.participation(specialist, consult) is not None:
        raise ValidationFailed("This specialist already takes part in the consult.")
    consult.participants.append(ConsultParticipant(
        user=specialist, user_id=specialist.id, role=ParticipantRole.LEAD_SPECIALIST, added_by=by, added_at=now,
        accepted_at=now))
    consult.specialist_id = specialist.id
    consult.accepted_at = now
    for other in consult.offers:
        if other is offer:
            other.status, other.responded_at = OfferStatus.ACCEPTED, now
        elif other.status == OfferStatus.OFFERED:
            other.status = OfferStatus.WITHDRAWN


def decline(specialist: User, ref: str, reason: str) -> Consult:
    """A specialist declines an offer with a reason; when nobody is left the request is flagged."""
    if not reason.strip():
        raise ValidationFailed("Say why you decline, so the coordinator can route the case.",
                               fields={"reason": "required"})
    consult = by_ref(ref, lock=True)
    offer = policy.pending_offer(specialist, consult)
    if offer is None:
        if not (policy.can_view(specialist, consult) or _was_offered(specialist, consult)):
            raise _deny(specialist, consult, "decline")
        raise Conflict("This request is no longer open to you.")
    offer.status = OfferStatus.DECLINED
    offer.decline_reason = reason.strip()[:500]
    offer.responded_at = utcnow()
    if consult.status == ConsultStatus.REQUESTED and not any(
        o.status == OfferStatus.OFFERED for o in consult.offers
    ):
        apply(consult, Event.ALL_DECLINED)
    record("consult.declined", actor=specialist, consult=consult, detail={"reason": offer.decline_reason})
    _commit_or_conflict("The request changed meanwhile. Reload and try again.")
    return consult


def assign(coordinator: User, ref: str, specialist_id: int) -> Consult:
    """A coordinator assigns an open request to an approved specialist."""
    if coordinator.role != Role.COORDINATOR:
        raise Forbidden("Only coordinators assign consults.")
    consult = by_ref(ref, lock=True)
    specialist = db.session.get(User, specialist_id)
    if specialist is None or specialist.role != Role.SPECIALIST or specialist.status != AccountStatus.APPROVED:
        raise ValidationFailed("Choose an approved specialist.", fields={"specialist_id": "invalid"})
    if policy.role_of(specialist, consult) == ParticipantRole.REQUESTER:
        raise ValidationFailed("A consult cannot be assigned to its requester.")
    apply(consult, Event.ASSIGN)
    offer = next((o for o in consult.offers if o.specialist_id == specialist.id), None)
    if offer is None:
        offer = ConsultOffer(consult_id=consult.id, specialist_id=specialist.id,
                             rank=len(consult.offers) + 1)
        consult.offers.append(offer)
    _take(consult, specialist, offer, by=coordinator)
    consult.assigned_by_id = coordinator.id
    record("consult.assigned", actor=coordinator, consult=consult,
           detail={"specialist_id": specialist.id})
    notify(_parties(consult), "consult.accepted", {"by": specialist.full_name}, consult=consult,
           exclude=specialist)
    consult_id = consult.id
    _commit_or_conflict("The request changed meanwhile. Reload and try again.")
    recheck_consult(consult_id)  # whoever the change leaves out loses its open connections
    return consult


def book(user: User, ref: str, starts_at: datetime) -> Consult:
    """Either party books a slot from the specialist's availability."""
    consult = _for_action(user, ref, policy.can_book, "book a time for", lock=True)
    assert consult.specialist is not None
    scheduling.reserve(consult, consult.specialist, starts_at, booked_by=user)
    apply(consult, Event.BOOK)
    record("consult.booked", actor=user, consult=consult, detail={"starts_at": starts_at.isoformat()})
    _notify_booked(consult, user, starts_at)
    _commit_or_conflict("The consult changed meanwhile. Reload and try again.")
    return consult


def open_slots_for(user: User, ref: str) -> tuple[Consult, list[scheduling.Slot]]:
    """The consult and its specialist's open slots, a page's worth, for a party who books or moves its time."""
    consult = check_visible(user, ref, "open_slots")
    if not (policy.entitled(user, consult, Action.BOOK) or policy.entitled(user, consult, Action.RESCHEDULE)):
        raise Forbidden(FORBIDDEN_ACTIONS["book a time for"])  # not the requester or the lead, as on the pages
    if consult.specialist is None:
        raise Conflict("A time can be booked once a specialist has accepted, and only once.")
    return consult, scheduling.open_slots(consult.specialist, days=scheduling.page_days())


def reschedule(user: User, ref: str, starts_at: datetime, reason: str) -> Consult:
    """Either party moves the booked time: old blocks freed, new ones taken, in one transaction.

    On any refusal (the slot was just taken, is outside the availability...) the whole
    transaction rolls back, so the consult keeps its old time.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("Give a reason for the new time.", fields={"reason": "required"})
    consult = _for_action(user, ref, policy.can_reschedule, "reschedule", lock=True)
    old = consult.appointment
    if old is None or consult.specialist is None:
        raise Conflict("This consult has no booked time to move.")
    starts_at = starts_at.astimezone(UTC)
    if starts_at == old.starts_at:
        raise ValidationFailed("That is the time already booked; choose another.", fields={"slot": "same"})
    old_start = old.starts_at
    try:
        scheduling.release(old, reason=f"Rescheduled: {reason[:480]}", by=user)
        scheduling.reserve(consult, consult.specialist, starts_at, booked_by=user)
    except DomainError:
        db.session.rollback()
        raise
    record("consult.rescheduled", actor=user, consult=consult,
           detail={"from": old_start.isoformat(), "to": starts_at.isoformat(), "reason": reason[:500]})
    notify(_parties(consult), "consult.rescheduled",
           {"by": user.full_name, "starts_at": starts_at.isoformat(), "reason": reason[:500]},
           consult=consult, exclude=user)
    _commit_or_conflict("The consult changed meanwhile. Reload and try again.")
    db.session.expire(consult, ["appointment"])
    return consult


def cancel(user: User, ref: str, reason: str) -> Consult:
    """The requester or a coordinator withdraws a consult; a booked slot is released."""
    if not reason.strip():
        raise ValidationFailed("Give a reason for cancelling.", fields={"reason": "required"})
    consult = _for_action(user, ref, policy.can_cancel, "cancel", lock=True)
    apply(consult, Event.CANCEL)
    consult.cancelled_at = utcnow()
    consult.cancel_reason = reason.strip()[:500]
    if consult.appointment is not None:
        scheduling.release(consult.appointment, reason=consult.cancel_reason, by=user)
    for offer in consult.offers:
        if offer.status == OfferStatus.OFFERED:
            offer.status = OfferStatus.WITHDRAWN
    record("consult.cancelled", actor=user, consult=consult, detail={"reason": consult.cancel_reason})
    notify(_parties(consult), "consult.cancelled", {"by": user.full_name, "reason": consult.cancel_reason},
           consult=consult, exclude=user)
    consult_id = consult.id
    _commit_or_conflict("The consult changed meanwhile. Reload and try again.")
    recheck_consult(consult_id)  # e.g. its call ends: connections no longer entitled are closed
    return consult


# --- the answer ---------------------------------------------------------------------------


def _had_call(consult: Consult) -> bool:
    return db.session.scalar(select(CallSession.id).where(
        CallSession.consult_id == consult.id, CallSession.connected_at.is_not(None)).limit(1)) is not None


def save_recommendation(specialist: User, ref: str, data: RecommendationData, *, sign: bool) -> Recommendation:
    """Save the specialist's answer as a draft, or sign it and complete the consult."""
    consult = _for_action(specialist, ref, policy.can_answer, "answer", lock=True)
    rec = consult.recommendation
    if rec is None:
        rec = Recommendation(consult=consult, author_id=specialist.id)
        db.session.add(rec)
    rec.assessment = data.assessment.strip()
    rec.plan = data.plan.strip()
    rec.refer_up = data.refer_up
    rec.refer_reason = data.refer_reason.strip() if data.refer_up else ""
    rec.follow_up = data.follow_up.strip()
    # A video consultation only if a call actually connected; otherwise it is a written answer.
    rec.mode = ConsultMode.VIDEO if _had_call(consult) else ConsultMode.WRITTEN
    if sign:
        todo = {}  # each missing field with what to do about it, shown at that field
        if not rec.assessment:
            todo["assessment"] = N_("Write the assessment.")
        if not rec.plan:
            todo["plan"] = N_("Write the recommended plan.")
        if rec.refer_up and not rec.refer_reason:
            todo["refer_reason"] = N_("Give the reason for referral.")
        if todo:
            names = {"assessment": N_("the assessment"), "plan": N_("the plan"),
                     "refer_reason": N_("the reason for referral")}
            wanted = listing([translate(names[k]) for k in todo])
            raise ValidationFailed("To sign, write %(wanted)s.", fields=dict.fromkeys(todo, "required"),
                                   field_messages=todo, wanted=wanted)
        apply(consult, Event.SIGN_OFF)
        db.session.flush()
        signing.sign(rec, actor=specialist, consult=consult, event="consult.signed",
                     detail={"mode": rec.mode.value, "refer_up": rec.refer_up})
        consult.completed_at = rec.signed_at
        notify(_parties(consult), "recommendation.signed", {"by": specialist.full_name}, consult=consult,
               exclude=specialist)
        hooks.sign_off(consult)  # the shared notes are fixed with the signature (notes, via hooks)
    else:
        record("recommendation.draft_saved", actor=specialist, consult=consult)
    consult_id = consult.id
    _commit_or_conflict("The consult changed meanwhile. Reload and try again.")
    if sign:
        recheck_consult(consult_id)  # its call ends: call connections are closed everywhere
    return rec


FROM_NOTES = ("assessment", "plan")  # the answer's fields that the shared notes have sections for


def notes_for_answer(specialist: User, consult: Consult) -> dict[str, str]:
    """The shared notes' Assessment and Plan as stored now, for the specialist writing the answer."""
    if not policy.can_answer(specialist, consult):
        raise Forbidden("Only the consult's specialist can answer it, before it is signed.")
    texts = hooks.shared_notes(consult)  # the notes document, caught up with what is stored
    return {name: texts.get(name, "").strip() for name in FROM_NOTES}


def fill_from_notes(data: RecommendationData, notes: dict[str, str], replace: str | None = None,
                    ) -> tuple[RecommendationData, list[str], list[str]]:
    """Start the answer from the notes: fill empty fields; replace typed text only in the field named.

    Returns the data, the fields filled, and the fields whose typed text was kept though the notes
    say something else (the page asks before replacing those).
    """
    if replace is not None and replace not in FROM_NOTES:
        raise ValidationFailed("Choose the assessment or the plan to replace.", fields={"from_notes": "invalid"})
    filled, kept = [], []
    for name in FROM_NOTES:
        source, typed = notes.get(name, ""), getattr(data, name).strip()
        if not source or source == typed:
            continue
        if not typed or name == replace:
            setattr(data, name, source)
            filled.append(name)
        else:
            kept.append(name)
    return data, filled, kept


def acknowledge(requester: User, ref: str) -> Recommendation:
    """The rural doctor confirms having read the signed recommendation."""
    consult = _for_action(requester, ref, lambda u, c: policy.entitled(u, c, Action.ACKNOWLEDGE), "acknowledge")
    rec = consult.recommendation
    if consult.status != ConsultStatus.COMPLETED or rec is None or not rec.is_signed:
        raise Conflict("There is no signed recommendation to acknowledge yet.")
    if rec.acknowledged_at is not None:
        raise Conflict("You have already acknowledged this recommendation.")
    rec.acknowledged_at = utcnow()
    rec.acknowledged_by_id = requester.id
    record("consult.acknowledged", actor=requester, consult=consult)
    notify(_parties(consult), "recommendation.acknowledged", {"by": requester.full_name}, consult=consult,
           exclude=requester)
    _commit_or_conflict("The consult changed meanwhile. Reload and try again.")
    return rec


def verify_signature(rec: Recommendation) -> bool:
    """Whether the signed recommendation still matches the hash taken at signing."""
    return signing.verify(rec)


# --- lists for dashboards -------------------------------------------------------------------


def requests_of(requester: User) -> list[Consult]:
    """A rural doctor's consults, newest first."""
    return list(db.session.scalars(
        select(Consult).where(policy.consults_of(requester, [ParticipantRole.REQUESTER]))
        .order_by(Consult.created_at.desc())
    ))


def offers_for(specialist: User) -> list[Consult]:
    """Requests currently offered to the specialist, most urgent and oldest first."""
    rows = db.session.scalars(
        select(Consult)
        .join(ConsultOffer, ConsultOffer.consult_id == Consult.id)
        .where(
            ConsultOffer.specialist_id == specialist.id,
            ConsultOffer.status == OfferStatus.OFFERED,
            Consult.status.in_((ConsultStatus.REQUESTED, ConsultStatus.DECLINED)),
        )
    ).all()
    order = {Urgency.EMERGENCY: 0, Urgency.URGENT: 1, Urgency.ROUTINE: 2}
    return sorted(rows, key=lambda c: (order[c.urgency], c.submitted_at or c.created_at))


def active_for_specialist(specialist: User) -> list[Consult]:
    """Consults the specialist has taken and not yet answered."""
    return list(db.session.scalars(
        select(Consult).where(
            policy.consults_of(specialist, [ParticipantRole.LEAD_SPECIALIST]),
            Consult.status.in_((ConsultStatus.ACCEPTED, ConsultStatus.SCHEDULED)),
        ).order_by(Consult.accepted_at)
    ))


def answered_by(specialist: User, limit: int = 20) -> list[Consult]:
    """The specialist's recently answered consults."""
    return list(db.session.scalars(
        select(Consult).where(
            policy.consults_of(specialist, [ParticipantRole.LEAD_SPECIALIST]),
            Consult.status == ConsultStatus.COMPLETED,
        ).order_by(Consult.completed_at.desc()).limit(limit)
    ))


def unassigned_queue() -> list[Consult]:
    """Requests no specialist has taken yet, the longest-waiting first."""
    rows = db.session.scalars(
        select(Consult).where(Consult.status.in_((ConsultStatus.REQUESTED, ConsultStatus.DECLINED)))
    ).all()
    order = {Urgency.EMERGENCY: 0, Urgency.URGENT: 1, Urgency.ROUTINE: 2}
    return sorted(rows, key=lambda c: (order[c.urgency], c.submitted_at or c.created_at))
