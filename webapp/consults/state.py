"""The consult lifecycle: every legal status change is listed here and only here."""

from __future__ import annotations

import enum

from ..errors import InvalidTransition
from ..models import Consult, ConsultStatus

S = ConsultStatus


class Event(enum.StrEnum):
    SUBMIT = "submit"
    ACCEPT = "accept"
    ASSIGN = "assign"
    ALL_DECLINED = "all_declined"
    BOOK = "book"
    SIGN_OFF = "sign_off"
    CANCEL = "cancel"


TRANSITIONS: dict[tuple[ConsultStatus, Event], ConsultStatus] = {
    (S.DRAFT, Event.SUBMIT): S.REQUESTED,
    (S.DRAFT, Event.CANCEL): S.CANCELLED,
    (S.REQUESTED, Event.ACCEPT): S.ACCEPTED,
    (S.REQUESTED, Event.ASSIGN): S.ACCEPTED,
    (S.REQUESTED, Event.ALL_DECLINED): S.DECLINED,
    (S.REQUESTED, Event.CANCEL): S.CANCELLED,
    (S.DECLINED, Event.ASSIGN): S.ACCEPTED,
    (S.DECLINED, Event.CANCEL): S.CANCELLED,
    (S.ACCEPTED, Event.BOOK): S.SCHEDULED,
    (S.ACCEPTED, Event.SIGN_OFF): S.COMPLETED,  # written answer, no call (store-and-forward)
    (S.ACCEPTED, Event.CANCEL): S.CANCELLED,
    (S.SCHEDULED, Event.SIGN_OFF): S.COMPLETED,
    (S.SCHEDULED, Event.CANCEL): S.CANCELLED,
}

EVENT_VERBS = {
    Event.SUBMIT: "submit",
    Event.ACCEPT: "accept",
    Event.ASSIGN: "assign",
    Event.ALL_DECLINED: "decline",
    Event.BOOK: "book a time for",
    Event.SIGN_OFF: "sign off",
    Event.CANCEL: "cancel",
}


def can(consult: Consult, event: Event) -> bool:
    """Whether the event is legal from the consult's current status."""
    return (consult.status, event) in TRANSITIONS


def apply(consult: Consult, event: Event) -> ConsultStatus:
    """Move the consult to its next status or raise InvalidTransition."""
    target = TRANSITIONS.get((consult.status, event))
    if target is None:
        raise InvalidTransition(
            f"You cannot {EVENT_VERBS[event]} a consult whose status is “{consult.status.label}”."
        )
    consult.status = target
    return target
