"""Every page speaks the reader's language: no English sentence left on a page for a zh-CN user, no
Chinese left on a page for an English one.

A world with data in every corner (a rural doctor, a specialist, a coordinator, a consult in each
state, chat, notifications, availability and leave, a pending registration, an audit log) is built
through the real services, with its user-entered data written in the language under test, so that
whatever of the other language remains on a page came from the product. Every GET route of
``app.url_map`` is listed programmatically and visited by every role (and anonymously) with every
value its URL takes; each page answered with HTML is checked. A route that is not a page is
skipped with its reason (SKIPPED); a new route with an argument this test cannot fill fails it.

The failure lists, per page, the offending runs so that a translator can act on them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import date, timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from tests.conftest import Factory, login, png_bytes
from tests.i18n.checker import english_runs, page_chinese, page_english
from webapp.auth import services as auth_services
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import AccountStatus, Delivery, FacilityLevel, Notification, Role, Sex, Urgency, User
from webapp.notes import services as notes
from webapp.scheduling import services as scheduling

# --- the world, with data in the language under test -------------------------------------------------

DATA = {
    "zh_CN": {
        "facility": "青石村卫生室", "hospital": "河西县人民医院", "partner": "兰州第二人民医院",
        "rural": "马文斌", "specialist": "李慧琴", "other_specialist": "周建国", "coordinator": "王晓燕",
        "pending": "赵小兰",
        "complaint": "胸痛三周", "history": "劳累后胸骨后压榨样疼痛，休息可缓解。",
        "findings": "心电图示V4至V6导联ST段压低", "treatment": "阿司匹林", "question": "是否需要冠脉造影？",
        "preferred": "周二上午", "decline": "不在我的专业范围内", "cancel": "患者已好转",
        "assessment": "不稳定型心绞痛", "plan": "转上级医院行冠脉造影", "follow": "一周后复诊",
        "leave": "外出学习", "chat": "病情", "attachment": "心电图", "suspend": "执业证书过期", "region": "甘肃",
        "notes": "患者六十一岁，劳累后胸闷。", "mail_error": "收件服务器拒绝连接",
    },
    "en": {
        "facility": "Stone Village Clinic", "hospital": "Hexi County Hospital", "partner": "Lanzhou Second Hospital",
        "rural": "Ma Wenbin", "specialist": "Li Huiqin", "other_specialist": "Zhou Jianguo",
        "coordinator": "Wang Xiaoyan", "pending": "Zhao Xiaolan",
        "complaint": "Chest pain for three weeks", "history": "Pressing retrosternal pain on exertion.",
        "findings": "ST depression V4 to V6", "treatment": "Aspirin", "question": "Is angiography needed?",
        "preferred": "Tuesday mornings", "decline": "Outside my field", "cancel": "The patient recovered",
        "assessment": "Unstable angina", "plan": "Transfer for angiography", "follow": "Review in a week",
        "leave": "Study leave", "chat": "update", "attachment": "Tracing", "suspend": "Licence expired",
        "region": "Gansu", "notes": "A 61-year-old woman with chest tightness on exertion.",
        "mail_error": "Connection refused by the mail server",
    },
}


@dataclass
class World:
    """The people and consults of a page tour, and the user-entered texts that may appear anywhere."""

    locale: str
    rural: User
    specialist: User
    coordinator: User
    refs: dict[str, str] = field(default_factory=dict)  # state -> consult ref
    facility_ids: list[int] = field(default_factory=list)
    reset_token: str = ""
    data: list[str] = field(default_factory=list)  # user data (names, case texts) to ignore

    def actors(self) -> dict[str, User | None]:
        return {"rural": self.rural, "specialist": self.specialist, "coordinator": self.coordinator,
                "anonymous": None}


def _user(make: Factory, role: Role, locale: str, name: str, email: str, **kw) -> User:
    user = make.user(role, name=name, email=email, **kw)
    user.locale = locale
    db.session.commit()
    return user


def build_world(make: Factory, locale: str) -> World:
    """The tour's world, its data in `locale`: one consult in each state, seen by all three roles."""
    d = DATA[locale]
    notes.forget()  # the shared notes kept in memory by consult id (ids are reused between tests)
    village = make.facility(d["facility"], FacilityLevel.VILLAGE_CLINIC)
    hospital = make.facility(d["hospital"], FacilityLevel.COUNTY_HOSPITAL)
    partner = make.facility(d["partner"], FacilityLevel.TERTIARY_HOSPITAL)
    for facility in (village, hospital, partner):
        facility.region = d["region"]
    make.partnership(village, hospital)
    rural = _user(make, Role.RURAL_DOCTOR, locale, d["rural"], "rural@test.example", facility=village)
    specialist = _user(make, Role.SPECIALIST, locale, d["specialist"], "cardio@test.example",
                       facility=hospital, specialty="cardiology")
    other = _user(make, Role.SPECIALIST, locale, d["other_specialist"], "cardio2@test.example",
                  facility=partner, specialty="cardiology")
    coordinator = _user(make, Role.COORDINATOR, locale, d["coordinator"], "coord@test.example")
    pending = make.user(Role.RURAL_DOCTOR, name=d["pending"], email="pending@test.example", facility=village,
                        status=AccountStatus.PENDING)
    pending.locale = locale
    db.session.commit()
    world = World(locale, rural, specialist, coordinator, facility_ids=[village.id, hospital.id, partner.id])
    world.data = [v for k, v in d.items()]
    make.availability(specialist)
    make.availability(other, (8, 12))
    scheduling.add_leave(specialist, date.today() + timedelta(days=20), date.today() + timedelta(days=22), d["leave"])
    scheduling.add_extra_hours(other, date.today() + timedelta(days=3), 18 * 60, 20 * 60, d["leave"])

    def case(**extra) -> consults.CaseData:
        data = consults.CaseData(
            specialty="cardiology", urgency=Urgency.URGENT, patient_age_years=61, patient_sex=Sex.FEMALE,
            chief_complaint=d["complaint"], history=d["history"], findings=d["findings"],
            current_treatment=d["treatment"], question=d["question"], preferred_times=d["preferred"],
            bp_systolic=150, bp_diastolic=95, heart_rate=88, respiratory_rate=18, spo2=96)
        for key, value in extra.items():
            setattr(data, key, value)
        return data

    def requested(**extra):
        return consults.submit(rural, consults.create_draft(rural, case(**extra)).ref)

    def second_slot():
        return scheduling.open_slots(specialist)[1].starts_at

    refs = world.refs
    refs["draft"] = consults.create_draft(rural, case(urgency=Urgency.ROUTINE)).ref
    refs["requested"] = requested(urgency=Urgency.EMERGENCY).ref
    consults.add_attachment(rural, refs["requested"], io.BytesIO(png_bytes()), "ecg.png", d["attachment"])
    refs["accepted"] = consults.accept(specialist, requested().ref).ref
    refs["scheduled"] = consults.accept(specialist, requested().ref, second_slot()).ref
    make.chat_history(consults.view_consult(rural, refs["scheduled"]), 4, prefix=d["chat"])
    declined = requested()
    consults.decline(specialist, declined.ref, d["decline"])
    consults.decline(other, declined.ref, d["decline"])
    refs["declined"] = declined.ref
    refs["cancelled"] = consults.cancel(rural, requested().ref, d["cancel"]).ref
    for state in ("answered", "acknowledged", "referred"):
        c = consults.accept(specialist, requested().ref)
        consults.save_recommendation(specialist, c.ref, consults.RecommendationData(
            assessment=d["assessment"], plan=d["plan"], follow_up=d["follow"],
            refer_up=state == "referred", refer_reason=d["decline"] if state == "referred" else ""), sign=True)
        if state == "acknowledged":
            consults.acknowledge(rural, c.ref)
        refs[state] = c.ref
    refs["drafted_answer"] = consults.accept(specialist, requested().ref).ref
    consults.save_recommendation(specialist, refs["drafted_answer"], consults.RecommendationData(
        assessment=d["assessment"], plan=d["plan"]), sign=False)
    scheduled = consults.view_consult(rural, refs["scheduled"])
    notes.apply_update(rural, scheduled, _notes_update("history", d["notes"]))
    notes.apply_update(specialist, scheduled, _notes_update("assessment", d["assessment"]))
    delivery = db.session.scalars(select(Delivery).order_by(Delivery.id)).first()  # an email given up on
    if delivery is None:
        note = db.session.scalars(select(Notification).order_by(Notification.id)).first()
        assert note is not None, "the world's requests notified nobody"
        delivery = Delivery(notification_id=note.id, channel="email")
        db.session.add(delivery)
    delivery.status, delivery.attempts, delivery.last_error = "failed", 5, d["mail_error"]
    db.session.commit()
    auth_services.suspend(coordinator, other.id, d["suspend"])
    _, link = auth_services.issue_reset_link(coordinator, rural.id)
    world.reset_token = link.rsplit("/", 1)[1]
    db.session.commit()
    return world


def _notes_update(section: str, text: str) -> bytes:
    """A shared-notes edit (a Yjs update) writing text into a section."""
    from pycrdt import Doc, Text

    doc = Doc()
    doc.get(section, type=Text).insert(0, text)
    return doc.get_update()


# --- the tour ---------------------------------------------------------------------------------------

# Endpoints that render no page, each with its reason.
SKIPPED = {
    "static": "static files (CSS, scripts, images), no text of the product's",
    "dashboard.favicon": "an icon",
    "health.healthz": "JSON for the load balancer",
    "i18n.catalog": "the scripts' catalog (JavaScript), checked by tests/i18n/test_catalogs.py",
    "notifications.unread": "JSON for the bell",
    "video.ice_servers": "JSON for the call (ICE server credentials)",
    "admin.audit_export": "a CSV download of stored audit rows",
    "consults.attachment": "a file download (the uploaded file itself)",
    "consults.open_slots": "JSON for the book and reschedule pages' script (the slots; labels as on the pages)",
    "scheduling.feed": "the iCal feed (text/calendar for calendar apps)",
    "socketio_transport": "the Socket.IO transport's URL (answered by the Socket.IO middleware, never by Flask)",
}
# Pages the tour must have seen answered with HTML by someone (all GET endpoints not skipped).


def url_values(world: World, argument: str) -> list:
    """The values the tour puts in a URL argument."""
    values = {"ref": list(world.refs.values()), "facility_id": world.facility_ids, "token": [world.reset_token]}
    assert argument in values, (f"a route takes <{argument}>, which this tour cannot fill: teach url_values "
                                "about it, or add the endpoint to SKIPPED with its reason")
    return values[argument]


def tour_urls(app: Flask, world: World) -> dict[str, list[str]]:
    """Every GET page of the app: endpoint -> the URLs to visit (each argument filled with each value)."""
    adapter = app.url_map.bind("localhost")
    urls: dict[str, list[str]] = {}
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()) or rule.endpoint in SKIPPED:
            continue
        combos: list[dict] = [{}]
        for argument in sorted(rule.arguments):
            combos = [{**c, argument: v} for c in combos for v in url_values(world, argument)]
        urls.setdefault(rule.endpoint, []).extend(adapter.build(rule.endpoint, c) for c in combos)
    urls["(error page)"] = ["/no-such-page"]
    return urls


@dataclass
class Tour:
    pages: dict[str, str] = field(default_factory=dict)  # "actor GET url" -> html
    seen: set[str] = field(default_factory=set)  # endpoints answered with an HTML page


def take_tour(app: Flask, world: World, headers: dict[str, str]) -> Tour:
    """Visit every page as every actor; keep the pages answered with HTML (200, or the error page)."""
    tour = Tour()
    urls = tour_urls(app, world)
    for actor, user in world.actors().items():
        client = app.test_client()
        if user is not None:
            response = login(client, user)
            assert response.status_code == 302, f"{actor} could not sign in"
        for endpoint, paths in urls.items():
            for path in paths:
                response = client.get(path, headers=headers)
                if response.mimetype != "text/html":
                    continue
                if response.status_code == 200 or endpoint == "(error page)":
                    tour.pages[f"{actor:<11} GET {path}"] = response.get_data(as_text=True)
                    tour.seen.add(endpoint)
                else:
                    assert response.status_code < 500, (actor, path, response.status_code)
    missing = set(urls) - tour.seen
    assert not missing, f"no actor reached these pages; give the world the data they need: {sorted(missing)}"
    return tour


def report(offences: dict[str, list[str]], what: str) -> str:
    """The failure message: what shows on most pages once, then per page what is left of it."""
    counts: dict[str, int] = {}
    for runs in offences.values():
        for run in set(runs):
            counts[run] = counts.get(run, 0) + 1
    common = {run for run, n in counts.items() if n > 1 and n >= len(offences) // 2}
    lines = [f"{len(offences)} page(s) show {what}."]
    if common:
        lines.append("On most of them (the layout, header, footer):")
        lines.extend(f"      {run!r}" for run in sorted(common))
    for page, runs in sorted(offences.items()):
        rest = [run for run in dict.fromkeys(runs) if run not in common]
        if rest:
            lines.append(f"  {page}")
            lines.extend(f"      {run!r}" for run in rest)
    return "\n".join(lines)


@pytest.mark.zh
def test_every_page_speaks_chinese_to_a_chinese_reader(app: Flask, make: Factory):
    world = build_world(make, "zh_CN")
    tour = take_tour(app, world, {"Accept-Language": "zh-CN,zh;q=0.9"})
    allowed = [*world.refs.values(), *world.data]
    offences = {page: runs for page, html in tour.pages.items() if (runs := page_english(html, allowed))}
    if offences:
        pytest.fail(report(offences, "English to a zh-CN reader (runs of 3+ English words)"), pytrace=False)


def test_every_page_speaks_english_to_an_english_reader(app: Flask, make: Factory):
    world = build_world(make, "en")
    tour = take_tour(app, world, {"Accept-Language": "en"})
    offences = {page: runs for page, html in tour.pages.items()
                if (runs := page_chinese(html, [*world.refs.values()]))}
    if offences:
        pytest.fail(report(offences, "Chinese to an English reader"), pytrace=False)


# --- the checker itself ------------------------------------------------------------------------------


def test_the_checker_sees_what_a_reader_sees():
    html = """<html><head><title>Consult requests</title><style>.a b c d {}</style></head><body>
      <script>const message = "this is not shown";</script>
      <p>患者 <a href="/x">Seen by the specialist</a> 已读</p>
      <input placeholder="Type a message here" aria-label="消息">
      <img alt="Picture of the patient"><button title="发送">发送</button>
      <select><option>Choose a time</option><option>上午</option></select>
      <p>Huizhen · SpO₂ 96% · BP 120/80 mmHg</p><p>ma@test.example wrote this</p>
      <td>Mon</td><td>Tue</td><p>ECG shows ST depression</p></body></html>"""
    found = page_english(html)
    assert "Seen by the specialist" in found
    assert "Type a message here" in found and "Picture of the patient" in found
    assert "Choose a time" in found and "Consult requests" not in found  # two words only
    assert "ECG shows ST depression" in found
    assert not any("not shown" in run or "Huizhen" in run or "wrote" in run for run in found), found
    assert page_chinese("<title>Room · Huizhen 会诊</title><p>中文</p><p>Seen by 2</p>") == []
    assert page_chinese("<p>Seen by 2 <b>已读</b></p>") == ["Seen by 2 已读"]
    assert english_runs("王医生 wrote: needs a scan.", ["王医生"]) == ["wrote: needs a scan."]
    assert english_runs("Forgot your password?") == ["Forgot your password?"]
    assert english_runs("心电图 · ECG · V4–V6 · 已读") == []
