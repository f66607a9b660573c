"""Demo data for a newcomer: facilities, clinicians, availability, two consults, a chat and notes.

The demo world is Chinese by default (names, facilities, case texts, chat and notes in Chinese, the
users speaking zh_CN); ``seed("en")`` loads the English one. Both have the same accounts (emails,
password ``DEMO_PASSWORD``), roles, facilities' levels and consults, so the README's walk-through
and the tests work with either.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from pycrdt import Doc, Text

from .auth.services import Registration, create_user
from .consults import services as consults
from .extensions import db
from .i18n import clean_locale
from .models import AccountStatus, Consult, Facility, FacilityLevel, Partnership, Role, Sex, Urgency, User
from .notes import services as notes
from .rooms import services as rooms
from .scheduling import services as scheduling

DEMO_PASSWORD = "huizhen-demo"
DEMO_LOCALES = ("zh_CN", "en")
WORKDAY_WINDOWS = [
    scheduling.Window(day, start * 60, end * 60)
    for day in range(7)
    for start, end in ((8, 12), (13, 18), (19, 22))
]


@dataclass(frozen=True)
class World:
    """The texts of one language's demo: who, where, and what the consults say."""

    facilities: tuple[tuple[str, str], tuple[str, str], tuple[str, str]]  # (name, region): county, regional, tertiary
    people: dict[str, str]  # demo email -> full name
    chest_pain: dict[str, str]  # CaseData text fields
    palpitations: dict[str, str]
    chat: tuple[tuple[str, str], ...]  # (email of the sender, text) in the scheduled consult's room
    notes: tuple[tuple[str, str, str], ...]  # (email of the author, section, text) of its case notes


ENGLISH = World(
    facilities=(("Qingshan County People's Hospital", "Dingxi, Gansu"),
                ("Lanzhou Regional Medical Centre", "Lanzhou, Gansu"),
                ("Xi'an Provincial People's Hospital", "Xi'an, Shaanxi")),
    people={"coordinator@demo.test": "Wang Fang", "rural@demo.test": "Dr. Li Wei",
            "specialist@demo.test": "Dr. Zhang Min", "specialist2@demo.test": "Dr. Chen Hui"},
    chest_pain={
        "chief_complaint": "Intermittent chest tightness on exertion for three weeks",
        "history": "Hypertension for 10 years on amlodipine 5 mg. Smoker, 30 pack-years. "
                   "Episodes last 5–10 minutes and ease with rest.",
        "findings": "Alert, no distress. Heart sounds regular, no murmur. Lungs clear. No oedema. "
                    "Resting ECG: sinus rhythm 78/min, 1 mm ST depression in V4–V6.",
        "current_treatment": "Amlodipine 5 mg daily; aspirin 100 mg started yesterday.",
        "question": "Is this unstable angina that needs transfer for angiography, or can we "
                    "manage here with medication and follow-up?",
        "preferred_times": "Weekday mornings; the patient lives 40 minutes away.",
    },
    palpitations={
        "chief_complaint": "Palpitations and dizziness for two months",
        "history": "Episodes of fast heartbeat lasting minutes, twice a week, once with near-fainting. "
                   "No known heart disease. Coffee 3 cups a day.",
        "findings": "Pulse 88 regular between episodes. Thyroid not enlarged. "
                    "ECG between episodes: normal sinus rhythm, PR 0.11 s.",
        "question": "Does the short PR interval suggest pre-excitation, and does she need a Holter "
                    "or a referral for electrophysiology?",
        "preferred_times": "Any afternoon this week.",
    },
    chat=(
        ("rural@demo.test", "Good morning, Dr. Zhang. I will upload a photo of the resting ECG before the call."),
        ("specialist@demo.test", "Thank you. Please also repeat the ECG during the next episode if you can, "
                                 "and check troponin if the hospital lab has it."),
        ("rural@demo.test", "Troponin I was 0.02 ng/mL (normal). The patient will come to the clinic for the call."),
    ),
    notes=(
        ("rural@demo.test", "history", "Father had a myocardial infarction at 58. "
                                       "No diabetes; fasting glucose 5.6 mmol/L last month."),
        ("specialist@demo.test", "assessment", "Exertional angina with ST depression in V4–V6 in a smoker "
                                               "with hypertension: rule out unstable angina. Review the ECG "
                                               "photo and the troponin at the call."),
    ),
)

CHINESE = World(
    facilities=(("民乐县人民医院", "甘肃省张掖市民乐县"),
                ("张掖市区域医疗中心", "甘肃省张掖市"),
                ("甘肃省人民医院", "甘肃省兰州市")),
    people={"coordinator@demo.test": "王芳", "rural@demo.test": "马晓丽",
            "specialist@demo.test": "周伟", "specialist2@demo.test": "陈慧"},
    chest_pain={
        "chief_complaint": "活动后间断胸闷3周",
        "history": "3周前起于爬坡、劳动后出现胸骨后闷痛，每次持续5～10分钟，休息后可缓解，无放射痛，"
                   "无大汗、晕厥。高血压病史10年，规律服用氨氯地平5 mg每日1次。吸烟30包年。",
        "findings": "神志清，精神可，无急性病容。心律齐，各瓣膜听诊区未闻及杂音。双肺呼吸音清。双下肢无水肿。"
                    "静息心电图：窦性心律，78次/分，V4～V6导联ST段压低1 mm。",
        "current_treatment": "氨氯地平5 mg，每日1次；昨日起加用阿司匹林100 mg，每日1次。",
        "question": "是否考虑不稳定型心绞痛，需要转上级医院行冠状动脉造影？还是可以在本院药物治疗并随访？",
        "preferred_times": "工作日上午；患者住处距医院约40分钟车程。",
    },
    palpitations={
        "chief_complaint": "心悸伴头晕2个月",
        "history": "近2个月反复发作心跳加快，每次持续数分钟，每周约2次，其中1次伴黑矇、几乎晕倒。"
                   "既往无心脏病史。每日饮咖啡3杯。",
        "findings": "发作间期脉搏88次/分，律齐。甲状腺未触及肿大。发作间期心电图：窦性心律，PR间期0.11秒。",
        "question": "PR间期缩短是否提示预激综合征？是否需要做动态心电图（Holter），或转诊行心脏电生理检查？",
        "preferred_times": "本周任意一天下午。",
    },
    chat=(
        ("rural@demo.test", "周医生您好，会诊前我先把静息心电图的照片上传上来。"),
        ("specialist@demo.test", "好的，谢谢。如果再次发作，请尽量复查一次心电图；"
                                 "检验科能做的话，查一下肌钙蛋白。"),
        ("rural@demo.test", "肌钙蛋白I 0.02 ng/mL，正常。视频会诊时患者会来医院。"),
    ),
    notes=(
        ("rural@demo.test", "history", "父亲58岁时患心肌梗死。无糖尿病史，上月空腹血糖5.6 mmol/L。"),
        ("specialist@demo.test", "assessment", "吸烟、高血压患者，劳力性胸痛伴V4～V6导联ST段压低，"
                                               "需排除不稳定型心绞痛。视频会诊时复核心电图照片及肌钙蛋白结果。"),
    ),
)

WORLDS: dict[str, World] = {"zh_CN": CHINESE, "en": ENGLISH}


def _note_update(state: bytes, section: str, text: str) -> bytes:
    """A notes update (as an author's editor would send it, on top of the notes' current state)
    that appends text to one section."""
    doc = Doc()
    part = doc.get(section, type=Text)
    doc.apply_update(state)
    before = doc.get_state()
    part += ("\n" if str(part) else "") + text
    return doc.get_update(before)


def seed(locale: str = "zh_CN") -> str:
    """Create the demo world in a language (zh_CN by default, or en) through the real services;
    returns a short summary."""
    chosen = clean_locale(locale)
    if chosen not in WORLDS:
        raise ValueError(f"no demo world for {locale!r}; choose one of {', '.join(DEMO_LOCALES)}")
    world = WORLDS[chosen]
    (county_name, county_region), (regional_name, regional_region), (tertiary_name, tertiary_region) = \
        world.facilities
    county = Facility(name=county_name, level=FacilityLevel.COUNTY_HOSPITAL, region=county_region)
    regional = Facility(name=regional_name, level=FacilityLevel.REGIONAL_MEDICAL_CENTRE, region=regional_region)
    tertiary = Facility(name=tertiary_name, level=FacilityLevel.TERTIARY_HOSPITAL, region=tertiary_region)
    db.session.add_all([county, regional, tertiary])
    db.session.flush()
    db.session.add(Partnership(facility_id=county.id, partner_id=regional.id))

    def person(email: str, role: Role, facility: Facility | None, **extra) -> User:
        user = create_user(
            Registration(email=email, password=DEMO_PASSWORD, full_name=world.people[email], role=role,
                         facility_id=facility.id if facility else 0,
                         licence_number=extra.pop("licence", "110000000000001"),
                         timezone="Asia/Shanghai", **extra),
            status=AccountStatus.APPROVED,
        )
        user.locale = chosen
        return user

    people = {
        "coordinator@demo.test": person("coordinator@demo.test", Role.COORDINATOR, None),
        "rural@demo.test": person("rural@demo.test", Role.RURAL_DOCTOR, county,
                                  languages=("zh-CN",), licence="620000000000101"),
        "specialist@demo.test": person("specialist@demo.test", Role.SPECIALIST, regional,
                                       specialty="cardiology", languages=("zh-CN", "en"),
                                       licence="620000000000201"),
        "specialist2@demo.test": person("specialist2@demo.test", Role.SPECIALIST, tertiary,
                                        specialty="cardiology", languages=("zh-CN", "en"),
                                        licence="610000000000301"),
    }
    db.session.commit()
    rural, cardio = people["rural@demo.test"], people["specialist@demo.test"]
    for specialist in (cardio, people["specialist2@demo.test"]):
        scheduling.set_availability(specialist, WORKDAY_WINDOWS)

    chest_pain = consults.create_draft(rural, consults.CaseData(
        specialty="cardiology", urgency=Urgency.URGENT, patient_age_years=63, patient_sex=Sex.MALE,
        **world.chest_pain,
        bp_systolic=158, bp_diastolic=94, heart_rate=78, respiratory_rate=16,
        temperature_c=Decimal("36.6"), spo2=97, weight_kg=Decimal("71.0"),
    ))
    consults.submit(rural, chest_pain.ref)
    first_slot = scheduling.open_slots(cardio)[2]
    consults.accept(cardio, chest_pain.ref, first_slot.starts_at)
    _talk(db.session.get(Consult, chest_pain.id), world, people)

    palpitations = consults.create_draft(rural, consults.CaseData(
        specialty="cardiology", urgency=Urgency.ROUTINE, patient_age_years=34, patient_sex=Sex.FEMALE,
        **world.palpitations,
        bp_systolic=118, bp_diastolic=76, heart_rate=88, spo2=99,
    ))
    consults.submit(rural, palpitations.ref)
    return (f"{chosen}: 3 facilities, 4 clinicians, 1 scheduled consult with {len(world.chat)} chat "
            f"messages and notes, 1 open request")


def _talk(consult: Consult, world: World, people: dict[str, User]) -> None:
    """The scheduled consult's chat lines and case notes, written by its two doctors."""
    for number, (email, text) in enumerate(world.chat, start=1):
        rooms.post_message(people[email], consult, f"demo-chat-{number:04d}", text, rate_charged=True)
    notes.forget(consult.id)  # a document this process cached for an earlier database with the same id
    for email, section, text in world.notes:
        notes.apply_update(people[email], consult, _note_update(notes.full_state(consult), section, text))
