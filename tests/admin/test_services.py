"""Coordinator use cases: facilities, partnerships and the programme figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from webapp.admin import services as admin
from webapp.consults import services as consults
from webapp.errors import Conflict, DomainError, Forbidden, NotFound, ValidationFailed
from webapp.extensions import db
from webapp.models import AuditEvent, Consult, ConsultStatus, Facility, FacilityLevel, Partnership

COUNTY = FacilityLevel.COUNTY_HOSPITAL
TERTIARY = FacilityLevel.TERTIARY_HOSPITAL


def refused(exc_type: type[DomainError], fn, *args, **kwargs) -> DomainError:
    """Call a use case that must refuse, then roll back as the routes do."""
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    db.session.rollback()
    return info.value


def facilities() -> list[tuple[str, FacilityLevel, str]]:
    return [(f.name, f.level, f.region) for f in db.session.scalars(
        select(Facility).order_by(Facility.id).execution_options(populate_existing=True))]


def pairs() -> list[tuple[int, int]]:
    return [(p.facility_id, p.partner_id) for p in db.session.scalars(
        select(Partnership).order_by(Partnership.id))]


def events(action: str) -> list[AuditEvent]:
    return list(db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


# --- facilities --------------------------------------------------------------------------------------


def test_save_facility_creates_and_renames(make):
    coordinator = make.coordinator()
    created = admin.save_facility(coordinator, "  Minxian County Hospital ", COUNTY, " Gansu ")
    assert facilities() == [("Minxian County Hospital", COUNTY, "Gansu")]

    admin.save_facility(coordinator, "Minxian People's Hospital", TERTIARY, "Gansu", facility_id=created.id)
    assert facilities() == [("Minxian People's Hospital", TERTIARY, "Gansu")]
    assert [e.detail["name"] for e in events("facility.saved")] == [
        "Minxian County Hospital", "Minxian People's Hospital"]
    assert {e.target for e in events("facility.saved")} == {f"facility:{created.id}"}
    assert [f.name for f in admin.list_facilities()] == ["Minxian People's Hospital"]


def test_facility_names_are_unique(make):
    coordinator = make.coordinator()
    admin.save_facility(coordinator, "Longxi County Hospital", COUNTY, "Gansu")
    other = admin.save_facility(coordinator, "Zhangxian County Hospital", COUNTY, "Gansu")

    exc = refused(Conflict, admin.save_facility, coordinator, "Longxi County Hospital", TERTIARY, "Shaanxi")
    assert exc.fields == {"name": "taken"}
    refused(Conflict, admin.save_facility, coordinator, " Longxi County Hospital ", COUNTY, "Gansu",
            facility_id=other.id)

    assert facilities() == [("Longxi County Hospital", COUNTY, "Gansu"),
                            ("Zhangxian County Hospital", COUNTY, "Gansu")]
    assert len(events("facility.saved")) == 2


def test_save_facility_refusals(make):
    coordinator = make.coordinator()
    refused(ValidationFailed, admin.save_facility, coordinator, "   ", COUNTY, "Gansu")
    refused(ValidationFailed, admin.save_facility, coordinator, "A hospital", COUNTY, "  ")
    refused(NotFound, admin.save_facility, coordinator, "A hospital", COUNTY, "Gansu", facility_id=999_999)
    for user in (make.rural(), make.specialist()):
        refused(Forbidden, admin.save_facility, user, "Rogue Hospital", COUNTY, "Gansu")
    assert "Rogue Hospital" not in {name for name, _, _ in facilities()}
    assert "A hospital" not in {name for name, _, _ in facilities()}


# --- partnerships --------------------------------------------------------------------------------------


@pytest.fixture
def two(make):
    return make.coordinator(), make.facility("Weiyuan County Hospital"), make.facility(
        "Lanzhou University First Hospital", level=TERTIARY)


def test_add_and_remove_a_partnership(two):
    coordinator, county, city = two
    pair = admin.add_partnership(coordinator, county.id, city.id)
    assert pairs() == [(county.id, city.id)]
    stored = db.session.get(Partnership, pair.id)
    assert stored.created_by_id == coordinator.id
    assert events("partnership.added")[0].detail == {"facility": county.name, "partner": city.name}
    assert admin.list_partnerships() == [stored]

    admin.remove_partnership(coordinator, pair.id)
    assert pairs() == []
    assert events("partnership.removed")[0].detail == {"facility": county.name, "partner": city.name}
    # once removed, the pair can be made again, in either direction
    admin.add_partnership(coordinator, city.id, county.id)
    assert pairs() == [(city.id, county.id)]


def test_a_facility_cannot_partner_with_itself(two):
    coordinator, county, _ = two
    refused(ValidationFailed, admin.add_partnership, coordinator, county.id, county.id)
    assert pairs() == []


def test_no_duplicate_partnership_in_either_direction(two):
    coordinator, county, city = two
    admin.add_partnership(coordinator, county.id, city.id)
    for a, b in ((county.id, city.id), (city.id, county.id)):
        exc = refused(Conflict, admin.add_partnership, coordinator, a, b)
        assert "already partners" in exc.message
    assert pairs() == [(county.id, city.id)]
    assert len(events("partnership.added")) == 1


def test_partnership_refusals(make, two):
    coordinator, county, city = two
    refused(ValidationFailed, admin.add_partnership, coordinator, county.id, 999_999)
    refused(Forbidden, admin.add_partnership, make.rural(), county.id, city.id)
    assert pairs() == []
    pair = admin.add_partnership(coordinator, county.id, city.id)
    refused(Forbidden, admin.remove_partnership, make.specialist(), pair.id)
    refused(NotFound, admin.remove_partnership, coordinator, 999_999)
    assert pairs() == [(county.id, city.id)]


# --- figures ------------------------------------------------------------------------------------------


def test_figures_of_an_empty_programme(app):
    f = admin.figures()
    assert f.by_status == {s.value: 0 for s in ConsultStatus}
    assert (f.median_hours_to_accept, f.median_hours_to_answer) == (None, None)
    assert (f.answered, f.referred_up, f.managed_locally) == (0, 0, 0)


def test_figures_on_a_small_known_world(make):
    coordinator = make.coordinator()
    doctor = make.rural()
    specialist = make.specialist()

    make.draft(doctor)
    make.requested(doctor)
    accepted = make.accepted(doctor, specialist)
    consults.save_recommendation(specialist, accepted.ref, consults.RecommendationData(
        assessment="Draft only", plan="Not signed"), sign=False)  # not an answer yet
    scheduled = make.scheduled(doctor, specialist)
    referred = make.accepted(doctor, specialist)
    consults.save_recommendation(specialist, referred.ref, consults.RecommendationData(
        assessment="STEMI", plan="Transfer", refer_up=True, refer_reason="Primary PCI"), sign=True)
    local = make.accepted(doctor, specialist)
    consults.save_recommendation(specialist, local.ref, consults.RecommendationData(
        assessment="Stable angina", plan="Medical management"), sign=True)
    cancelled = make.requested(doctor)
    consults.cancel(coordinator, cancelled.ref, "Duplicate request")
    declined = make.requested(doctor)
    consults.decline(specialist, declined.ref, "Outside my expertise")

    # known response times, hours after submission: (accepted, answered)
    t0 = datetime(2026, 1, 5, 8, tzinfo=UTC)
    times = {accepted: (1, None), scheduled: (2, None), referred: (3, 10), local: (5, 6)}
    for c, (to_accept, to_answer) in times.items():
        db.session.execute(update(Consult).where(Consult.id == c.id).values(
            submitted_at=t0, accepted_at=t0 + timedelta(hours=to_accept),
            completed_at=t0 + timedelta(hours=to_answer) if to_answer else None))
    db.session.commit()

    f = admin.figures()

    assert f.by_status == {"draft": 1, "requested": 1, "accepted": 1, "scheduled": 1,
                           "completed": 2, "declined": 1, "cancelled": 1}
    assert f.median_hours_to_accept == 2.5  # of 1, 2, 3 and 5 hours
    assert f.median_hours_to_answer == 8.0  # of 10 and 6 hours
    assert (f.answered, f.referred_up, f.managed_locally) == (2, 1, 1)
