"""Matching a request to eligible specialists: partner first, then availability, then load."""

from __future__ import annotations

from webapp.consults import services as consults
from webapp.consults.matching import eligible_specialists, partner_facility_ids
from webapp.models import AccountStatus, User
from webapp.scheduling import services as scheduling

SIGNED = consults.RecommendationData(assessment="Stable angina.", plan="Start a beta blocker.")


def _names(candidates) -> list[str]:
    return [c.specialist.full_name for c in candidates]


def _give_load(make, specialist: User, count: int) -> None:
    """Make the specialist the owner of `count` active (accepted) consults.

    The requests are in dermatology, which nobody in these worlds practises, so they
    are offered to nobody and a coordinator assigns them directly.
    """
    coordinator, doctor = make.coordinator(), make.rural()
    for _ in range(count):
        c = make.requested(doctor, specialty="dermatology")
        consults.assign(coordinator, c.ref, specialist.id)


def test_partner_first_in_both_directions_then_availability_then_load_then_name(make):
    home = make.facility("Longxi County Hospital")
    forward = make.facility("Lanzhou First Hospital")  # home -> forward
    backward = make.facility("Xi'an Central Hospital")  # backward -> home
    elsewhere = make.facility("Beijing Heart Centre")
    make.partnership(home, forward)
    make.partnership(backward, home)
    requester = make.rural(facility=home)

    partner_busy_available = make.specialist(facility=forward, name="Partner Busy Available")
    partner_unavailable = make.specialist(facility=backward, name="Partner Unavailable")
    available_heavy = make.specialist(facility=elsewhere, name="Available Heavy")
    available_light = make.specialist(facility=elsewhere, name="Available Light")
    busy = make.specialist(facility=elsewhere, name="Busy")
    make.specialist(facility=elsewhere, name="Zhou Idle")
    make.specialist(facility=elsewhere, name="An Idle")

    make.availability(partner_busy_available)
    make.availability(available_heavy)
    make.availability(available_light)
    _give_load(make, partner_busy_available, 2)
    _give_load(make, available_heavy, 3)
    _give_load(make, busy, 1)
    _give_load(make, partner_unavailable, 1)

    draft = make.draft(requester)
    ranked = eligible_specialists(draft)

    by_name = {c.specialist.full_name: c for c in ranked}
    assert by_name["Partner Busy Available"].is_partner and by_name["Partner Unavailable"].is_partner
    assert not any(by_name[n].is_partner for n in ("Available Heavy", "Available Light", "Busy",
                                                   "An Idle", "Zhou Idle"))
    assert by_name["Partner Busy Available"].has_availability
    assert not by_name["Partner Unavailable"].has_availability
    assert by_name["Available Heavy"].active_load == 3
    assert by_name["Partner Busy Available"].active_load == 2
    assert by_name["Busy"].active_load == by_name["Partner Unavailable"].active_load == 1
    assert by_name["An Idle"].active_load == 0
    assert _names(ranked) == [
        "Partner Busy Available",  # partner with availability, despite a load of 2
        "Partner Unavailable",  # partner (reverse partnership): no availability, load 1
        "Available Light",  # not a partner, publishes availability, load 0
        "Available Heavy",  # not a partner, publishes availability, load 3
        "An Idle",  # no availability, load 0 (name breaks the tie)
        "Zhou Idle",  # no availability, load 0
        "Busy",  # no availability, load 1
    ]
    assert partner_facility_ids(home.id) == {forward.id, backward.id}
    assert partner_facility_ids(forward.id) == {home.id}
    assert partner_unavailable.id in {c.specialist.id for c in ranked if c.is_partner}
    assert {c.specialist.id for c in ranked} >= {available_heavy.id, available_light.id, busy.id}


def test_only_approved_specialists_of_the_specialty_are_eligible(make):
    hospital = make.facility("Partner Hospital")
    home = make.facility("Home County Hospital")
    make.partnership(home, hospital)
    requester = make.rural(facility=home)
    eligible = make.specialist(facility=hospital, name="Approved Cardiologist")
    for status in (AccountStatus.PENDING, AccountStatus.REJECTED, AccountStatus.SUSPENDED):
        make.specialist(facility=hospital, status=status, name=f"{status.value} cardiologist")
    make.specialist(facility=hospital, specialty="neurology", name="Neurologist")

    ranked = eligible_specialists(make.draft(requester))

    assert [c.specialist.id for c in ranked] == [eligible.id]
    assert ranked[0].is_partner


def test_only_accepted_and_scheduled_consults_count_as_load(make):
    coordinator, doctor = make.coordinator(), make.rural()
    heavy = make.specialist(name="Heavy")
    light = make.specialist(name="Light")
    make.availability(heavy)
    make.availability(light)
    # light: one completed and one cancelled consult -> load 0
    done = make.requested(doctor, specialty="dermatology")
    consults.assign(coordinator, done.ref, light.id)
    consults.save_recommendation(light, done.ref, SIGNED, sign=True)
    dropped = make.requested(doctor, specialty="dermatology")
    consults.assign(coordinator, dropped.ref, light.id)
    consults.cancel(doctor, dropped.ref, "Patient recovered")
    # heavy: one scheduled consult -> load 1
    booked = make.requested(doctor, specialty="dermatology")
    consults.assign(coordinator, booked.ref, heavy.id)
    consults.book(doctor, booked.ref, scheduling.open_slots(heavy)[0].starts_at)

    ranked = eligible_specialists(make.draft(make.rural()))

    assert [(c.specialist.full_name, c.active_load) for c in ranked] == [("Light", 0), ("Heavy", 1)]


def test_no_specialty_or_nobody_to_offer(make):
    requester = make.rural()
    make.specialist(specialty="neurology")
    assert eligible_specialists(make.draft(requester, specialty=None)) == []
    assert eligible_specialists(make.draft(requester, specialty="cardiology")) == []


def test_requester_without_facility_has_no_partners(make):
    assert partner_facility_ids(None) == set()
    lonely = make.facility("Lonely Clinic")
    assert partner_facility_ids(lonely.id) == set()
