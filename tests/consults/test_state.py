"""The consult state machine: every legal move, and a clear refusal for every other one."""

from __future__ import annotations

import pytest

from webapp.consults.state import EVENT_VERBS, TRANSITIONS, Event, apply, can
from webapp.errors import InvalidTransition
from webapp.models import Consult, ConsultStatus

S = ConsultStatus

# The lifecycle as the product describes it; TRANSITIONS must say exactly this.
EXPECTED = {
    (S.DRAFT, Event.SUBMIT): S.REQUESTED,
    (S.DRAFT, Event.CANCEL): S.CANCELLED,
    (S.REQUESTED, Event.ACCEPT): S.ACCEPTED,
    (S.REQUESTED, Event.ASSIGN): S.ACCEPTED,
    (S.REQUESTED, Event.ALL_DECLINED): S.DECLINED,
    (S.REQUESTED, Event.CANCEL): S.CANCELLED,
    (S.DECLINED, Event.ASSIGN): S.ACCEPTED,
    (S.DECLINED, Event.CANCEL): S.CANCELLED,
    (S.ACCEPTED, Event.BOOK): S.SCHEDULED,
    (S.ACCEPTED, Event.SIGN_OFF): S.COMPLETED,
    (S.ACCEPTED, Event.CANCEL): S.CANCELLED,
    (S.SCHEDULED, Event.SIGN_OFF): S.COMPLETED,
    (S.SCHEDULED, Event.CANCEL): S.CANCELLED,
}

LEGAL = sorted(TRANSITIONS.items(), key=lambda item: (item[0][0].value, item[0][1].value))
ILLEGAL = [(status, event) for status in ConsultStatus for event in Event
           if (status, event) not in TRANSITIONS]


def _consult(status: ConsultStatus) -> Consult:
    """A transient consult: the state machine needs no database."""
    return Consult(status=status)


def test_transition_table_is_the_documented_lifecycle():
    assert TRANSITIONS == EXPECTED


def test_every_event_has_a_verb_for_messages():
    assert set(EVENT_VERBS) == set(Event)


def test_finished_consults_have_no_way_out():
    for status in (S.COMPLETED, S.CANCELLED):
        assert not [event for (s, event) in TRANSITIONS if s == status]


def test_every_status_but_draft_is_reachable():
    assert {target for target in TRANSITIONS.values()} == set(ConsultStatus) - {S.DRAFT}


@pytest.mark.parametrize(("source", "event", "target"),
                         [(s, e, t) for (s, e), t in LEGAL],
                         ids=[f"{s.value}-{e.value}" for (s, e), _ in LEGAL])
def test_legal_transition(source: ConsultStatus, event: Event, target: ConsultStatus):
    consult = _consult(source)
    assert can(consult, event)
    assert apply(consult, event) == target
    assert consult.status == target


@pytest.mark.parametrize(("status", "event"), ILLEGAL,
                         ids=[f"{s.value}-{e.value}" for s, e in ILLEGAL])
def test_illegal_transition_is_refused_clearly(status: ConsultStatus, event: Event):
    consult = _consult(status)
    assert not can(consult, event)
    with pytest.raises(InvalidTransition) as info:
        apply(consult, event)
    exc = info.value
    assert exc.status == 409
    assert exc.code == "invalid_transition"
    assert exc.message == (
        f"You cannot {EVENT_VERBS[event]} a consult whose status is “{status.label}”."
    )
    assert consult.status == status  # a refused event changes nothing


def test_illegal_pairs_cover_the_rest_of_the_grid():
    assert len(LEGAL) + len(ILLEGAL) == len(ConsultStatus) * len(Event)
    assert len(ILLEGAL) == len(ConsultStatus) * len(Event) - len(EXPECTED)
