"""Demo data for a newcomer: facilities, clinicians, availability and two consults."""

from __future__ import annotations

from decimal import Decimal

from .auth.services import Registration, create_user
from .consults import services as consults
from .extensions import db
from .models import AccountStatus, Facility, FacilityLevel, Partnership, Role, Sex, Urgency
from .scheduling import services as scheduling

DEMO_PASSWORD = "huizhen-demo"
WORKDAY_WINDOWS = [
    scheduling.Window(day, start * 60, end * 60)
    for day in range(7)
    for start, end in ((8, 12), (13, 18), (19, 22))
]


def seed() -> str:
    """Create the demo world through the real services; returns a short summary."""
    county = Facility(name="Qingshan County People's Hospital",
                      level=FacilityLevel.COUNTY_HOSPITAL, region="Dingxi, Gansu")
    regional = Facility(name="Lanzhou Regional Medical Centre",
                        level=FacilityLevel.REGIONAL_MEDICAL_CENTRE, region="Lanzhou, Gansu")
    tertiary = Facility(name="Xi'an Provincial People's Hospital",
                        level=FacilityLevel.TERTIARY_HOSPITAL, region="Xi'an, Shaanxi")
    db.session.add_all([county, regional, tertiary])
    db.session.flush()
    db.session.add(Partnership(facility_id=county.id, partner_id=regional.id))

    def person(email: str, name: str, role: Role, facility: Facility | None, **extra):
        return create_user(
            Registration(email=email, password=DEMO_PASSWORD, full_name=name, role=role,
                         facility_id=facility.id if facility else 0,
                         licence_number=extra.pop("licence", "110000000000001"),
                         timezone="Asia/Shanghai", **extra),
            status=AccountStatus.APPROVED,
        )

    coordinator = person("coordinator@demo.test", "Wang Fang", Role.COORDINATOR, None)
    rural = person("rural@demo.test", "Dr. Li Wei", Role.RURAL_DOCTOR, county,
                   languages=("zh-CN",), licence="620000000000101")
    cardio = person("specialist@demo.test", "Dr. Zhang Min", Role.SPECIALIST, regional,
                    specialty="cardiology", languages=("zh-CN", "en"), licence="620000000000201")
    cardio2 = person("specialist2@demo.test", "Dr. Chen Hui", Role.SPECIALIST, tertiary,
                     specialty="cardiology", languages=("zh-CN", "en"), licence="610000000000301")
    db.session.commit()
    del coordinator
    for specialist in (cardio, cardio2):
        scheduling.set_availability(specialist, WORKDAY_WINDOWS)

    chest_pain = consults.create_draft(rural, consults.CaseData(
        specialty="cardiology", urgency=Urgency.URGENT, patient_age_years=63, patient_sex=Sex.MALE,
        chief_complaint="Intermittent chest tightness on exertion for three weeks",
        history="Hypertension for 10 years on amlodipine 5 mg. Smoker, 30 pack-years. "
                "Episodes last 5–10 minutes and ease with rest.",
        findings="Alert, no distress. Heart sounds regular, no murmur. Lungs clear. No oedema. "
                 "Resting ECG: sinus rhythm 78/min, 1 mm ST depression in V4–V6.",
        current_treatment="Amlodipine 5 mg daily; aspirin 100 mg started yesterday.",
        question="Is this unstable angina that needs transfer for angiography, or can we "
                 "manage here with medication and follow-up?",
        preferred_times="Weekday mornings; the patient lives 40 minutes away.",
        bp_systolic=158, bp_diastolic=94, heart_rate=78, respiratory_rate=16,
        temperature_c=Decimal("36.6"), spo2=97, weight_kg=Decimal("71.0"),
    ))
    consults.submit(rural, chest_pain.ref)
    first_slot = scheduling.open_slots(cardio)[2]
    consults.accept(cardio, chest_pain.ref, first_slot.starts_at)

    palpitations = consults.create_draft(rural, consults.CaseData(
        specialty="cardiology", urgency=Urgency.ROUTINE, patient_age_years=34, patient_sex=Sex.FEMALE,
        chief_complaint="Palpitations and dizziness for two months",
        history="Episodes of fast heartbeat lasting minutes, twice a week, once with near-fainting. "
                "No known heart disease. Coffee 3 cups a day.",
        findings="Pulse 88 regular between episodes. Thyroid not enlarged. "
                 "ECG between episodes: normal sinus rhythm, PR 0.11 s.",
        question="Does the short PR interval suggest pre-excitation, and does she need a Holter "
                 "or a referral for electrophysiology?",
        preferred_times="Any afternoon this week.",
        bp_systolic=118, bp_diastolic=76, heart_rate=88, spo2=99,
    ))
    consults.submit(rural, palpitations.ref)
    return "3 facilities, 4 clinicians, 1 scheduled consult, 1 open request"
