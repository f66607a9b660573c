"""Who may see and do what with a consult: one place for every permission rule."""

from __future__ import annotations

from ..models import Consult, ConsultOffer, ConsultStatus, OfferStatus, Role, User


def pending_offer(user: User, consult: Consult) -> ConsultOffer | None:
    """The open offer of this consult to this specialist, if any."""
    if user.role != Role.SPECIALIST or consult.status not in (
        ConsultStatus.REQUESTED, ConsultStatus.DECLINED
    ):
        return None
    for offer in consult.offers:
        if offer.specialist_id == user.id and offer.status == OfferStatus.OFFERED:
            return offer
    return None


def is_party(user: User, consult: Consult) -> bool:
    """The consult's requester or its specialist."""
    return user.id in (consult.requester_id, consult.specialist_id)


def can_view(user: User, consult: Consult) -> bool:
    """Parties, coordinators, and specialists weighing an open offer of this request."""
    if user.role == Role.COORDINATOR or is_party(user, consult):
        return True
    return pending_offer(user, consult) is not None


def can_edit_case(user: User, consult: Consult) -> bool:
    """The requester edits the case until a specialist has taken it."""
    return user.id == consult.requester_id and consult.status in (
        ConsultStatus.DRAFT, ConsultStatus.REQUESTED, ConsultStatus.DECLINED
    )


def can_attach(user: User, consult: Consult) -> bool:
    """Both parties may add files until the consult is answered or cancelled."""
    return is_party(user, consult) and consult.status not in (
        ConsultStatus.COMPLETED, ConsultStatus.CANCELLED
    )


def can_answer(user: User, consult: Consult) -> bool:
    """Only the consult's own specialist writes and signs the recommendation."""
    return user.id == consult.specialist_id and consult.status in (
        ConsultStatus.ACCEPTED, ConsultStatus.SCHEDULED
    )


def can_cancel(user: User, consult: Consult) -> bool:
    """The requester or a coordinator may cancel before the consult is answered."""
    return (user.id == consult.requester_id or user.role == Role.COORDINATOR) and consult.status in (
        ConsultStatus.DRAFT, ConsultStatus.REQUESTED, ConsultStatus.DECLINED,
        ConsultStatus.ACCEPTED, ConsultStatus.SCHEDULED,
    )


def can_book(user: User, consult: Consult) -> bool:
    """Either party books the time once a specialist has accepted."""
    return is_party(user, consult) and consult.status == ConsultStatus.ACCEPTED


def can_reschedule(user: User, consult: Consult) -> bool:
    """Either party moves a booked consultation to another free slot."""
    return is_party(user, consult) and consult.status == ConsultStatus.SCHEDULED
