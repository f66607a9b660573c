"""The consult lifecycle: every legal status change is listed here and only here."""

from __future__ import annotations

import enum

from ..errors import InvalidTransition
from ..i18n import N_
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

# The English verb of each event (the refusals below spell it out; one msgid per event).
EVENT_VERBS = {
    Event.SUBMIT: "submit",
    Event.ACCEPT: "accept",
    Event.ASSIGN: "assign",
    Event.ALL_DECLINED: "decline",
    Event.BOOK: "book a time for",
    Event.SIGN_OFF: "sign off",
    Event.CANCEL: "cancel",
}


REFUSALS = {
    Event.SUBMIT: N_("You cannot submit a consult whose status is “%(status)s”."),
    Event.ACCEPT: N_("You cannot accept a consult whose status is “%(status)s”."),
    Event.ASSIGN: N_("You cannot assign a consult whose status is “%(status)s”."),
    Event.ALL_DECLINED: N_("You cannot decline a consult whose status is “%(status)s”."),
    Event.BOOK: N_("You cannot book a time for a consult whose status is “%(status)s”."),
    Event.SIGN_OFF: N_("You cannot sign off a consult whose status is “%(status)s”."),
    Event.CANCEL: N_("You cannot cancel a consult whose status is “%(status)s”."),
}


def can(consult: Consult, event: Event) -> bool:
    """Whether the event is legal from the consult's current status."""
    return (consult.status, event) in TRANSITIONS


def apply(consult: Consult, event: Event) -> ConsultStatus:
    """Move the consult to its next status or raise InvalidTransition."""
    target = TRANSITIONS.get((consult.status, event))
    if target is None:
        raise InvalidTransition(REFUSALS[event], status=consult.status.label)
    consult.status = target
    return target
