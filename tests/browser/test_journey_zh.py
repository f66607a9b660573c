"""The consult journey in Chinese: two clinicians whose setting is zh_CN, in browsers that ask for
zh-CN, go request -> accept -> the room (chat, shared notes, video call) -> signed recommendation
-> acknowledgement, every page screenshotted into test-artifacts/zh/journey-NN-name.png.

Elements are found by role, name and label in the words of the zh_CN catalogs, looked up at test
time (zh() for the server's "messages" domain, zhjs() for the scripts' "js" domain), so the test
holds whatever the translation says. The room's live states (connected, the other doctor's
presence, the "Seen by" receipt, the notes saved, the call connected) are asserted in Chinese, and
no screenshotted page may show a run of three or more English words (tests/i18n/test_pages.py's
checker). Msgids the catalogs do not translate yet are listed with the English runs at the end.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
from babel import Locale
from babel.support import Translations
from playwright.sync_api import Browser, Page, expect

from tests.browser.test_journey import DESKTOP, Journey, expect_images_loaded
from tests.browser.test_room_chat import wait_joined
from tests.conftest import PASSWORD, Factory
from tests.i18n.checker import page_english
from webapp.extensions import db
from webapp.i18n import TRANSLATIONS_DIR
from webapp.models import FacilityLevel, User

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("generous_chat")]

RURAL_TZ = "Asia/Urumqi"
SPECIALIST_TZ = "Asia/Shanghai"
RURAL_NAME, SPECIALIST_NAME = "马晓丽医生", "周伟医生"
COMPLAINT = "活动后胸闷三周"
# Chromium's fake camera and microphone (--use-fake-device-for-media-stream): the device pickers list
# their names, which come from the machine, not from Huizhen.
FAKE_DEVICES = ("Fake Default Audio Input", "Fake Default Audio Output", "Fake Audio Input 1",
                "Fake Audio Input 2", "Fake Audio Input", "Fake Audio Output", "fake_device_0", "fake_device_1")
UNTRANSLATED: set[str] = set()  # msgids this journey used that the zh_CN catalogs do not translate


@cache
def _catalog(domain: str) -> Translations:
    # Babel names zh_CN zh_Hans_CN (the compiled catalogs' directory); "zh_CN" is where the .po files are
    return Translations.load(str(TRANSLATIONS_DIR), [str(Locale.parse("zh_CN")), "zh_CN"], domain)


def _lookup(domain: str, msgid: str, params: dict[str, str]) -> str:
    text = _catalog(domain).gettext(msgid)
    if text == msgid:
        UNTRANSLATED.add(f"{domain}: {msgid}")
    return text % params if params else text


def zh(msgid: str, **params: str) -> str:
    """The server's Chinese for a msgid (domain "messages"), its %(name)s parameters filled in."""
    return _lookup("messages", msgid, params)


def zhjs(msgid: str, **params: str) -> str:
    """The scripts' Chinese for a msgid (domain "js"), its %(name)s parameters filled in."""
    return _lookup("js", msgid, params)


class ZhJourney(Journey):
    """The English journey's screenshots and browser-problem watch, plus the English left on each page."""

    allowed: list[str]
    english: dict[str, list[str]]

    def shot(self, page: Page, name: str) -> None:
        super().shot(page, name)
        runs = page_english(page.content(), self.allowed)
        if runs:
            self.english[self.shots[-1].name] = runs


def zh_user(make: Factory, role_maker, **kw) -> User:
    user = role_maker(**kw)
    user.locale = "zh_CN"
    db.session.commit()
    return user


def open_zh_page(browser: Browser, journey: Journey, who: str, tz: str):
    context = browser.new_context(viewport=DESKTOP, locale="zh-CN", timezone_id=tz)
    context.set_default_timeout(15_000)
    return context, journey.watch(context.new_page(), who)


def sign_in_zh(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label(zh("Email")).fill(email)
    page.get_by_label(zh("Password")).fill(PASSWORD)
    page.get_by_role("button", name=zh("Sign in"), exact=True).click()
    expect(page.get_by_role("button", name=zh("Sign out"))).to_be_visible()


def say(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name=zh("Message"))
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def test_consult_journey_in_chinese(browser: Browser, live_server, make: Factory, shots: Path):
    base = live_server.url
    journey = ZhJourney(shots / "zh")
    journey.dir.mkdir(parents=True, exist_ok=True)

    county = make.facility("民乐县人民医院", FacilityLevel.COUNTY_HOSPITAL)
    regional = make.facility("张掖市区域医疗中心", FacilityLevel.REGIONAL_MEDICAL_CENTRE)
    for facility in (county, regional):
        facility.region = "甘肃"
    make.partnership(county, regional)
    rural_user = zh_user(make, make.rural, facility=county, name=RURAL_NAME, email="ma@huizhen.example",
                         timezone=RURAL_TZ)
    specialist = zh_user(make, make.specialist, facility=regional, name=SPECIALIST_NAME,
                         email="zhou@huizhen.example", timezone=SPECIALIST_TZ)
    make.availability(specialist, (0, 24))
    journey.allowed = [RURAL_NAME, SPECIALIST_NAME, "民乐县人民医院", "张掖市区域医疗中心", RURAL_TZ, SPECIALIST_TZ,
                       *FAKE_DEVICES]
    journey.english = {}

    rural_ctx, rural = open_zh_page(browser, journey, "rural", RURAL_TZ)
    spec_ctx, spec = open_zh_page(browser, journey, "specialist", SPECIALIST_TZ)
    try:
        # 1. The rural doctor signs in and files a structured request.
        rural.goto(f"{base}/login")
        expect(rural.locator("html")).to_have_attribute("lang", "zh-CN")
        journey.shot(rural, "login")
        sign_in_zh(rural, base, rural_user.email)
        expect(rural.get_by_role("heading", name=zh("My consult requests"))).to_be_visible()
        journey.shot(rural, "rural-dashboard")
        rural.get_by_role("navigation", name=zh("Main")).get_by_role("link", name=zh("New request")).click()
        expect(rural.get_by_role("heading", name=zh("New consult request"))).to_be_visible()
        rural.get_by_label(zh("Age (years)")).fill("58")
        rural.get_by_label(zh("Sex")).select_option("male")
        rural.get_by_label(zh("Specialty needed")).select_option("cardiology")
        rural.get_by_label(zh("Urgent"), exact=True).check()
        rural.get_by_label(zh("Chief complaint")).fill(COMPLAINT)
        rural.get_by_label(zh("History")).first.fill("农民，吸烟三十年。三周来上坡时胸闷，休息可缓解。")
        rural.get_by_label(zh("Examination findings")).fill("心电图示V4至V6导联ST段压低1毫米。")
        rural.get_by_label(zh("Your question for the specialist")).fill("是否需要到区域医疗中心行冠脉造影？")
        journey.shot(rural, "new-request-filled")
        rural.get_by_role("button", name=zh("Save draft")).click()
        expect(rural.get_by_role("heading", name=zh("Edit consult request"))).to_be_visible()
        ref = rural.url.rstrip("/").split("/")[-2]
        rural.get_by_role("button", name=zh("Send request")).click()
        expect(rural).to_have_url(f"{base}/consults/{ref}")
        expect(rural.get_by_role("heading", name=COMPLAINT)).to_be_visible()
        expect(rural.locator(".page-head .badge.requested")).to_have_text(zh("Awaiting specialist"))
        journey.shot(rural, "request-sent")

        # 2. The specialist reviews the offer and accepts a time.
        sign_in_zh(spec, base, specialist.email)
        offered = spec.locator(".card", has=spec.get_by_role("heading", name=zh("Requests offered to you")))
        offer_row = offered.locator("tbody tr")
        expect(offer_row).to_contain_text(COMPLAINT)
        journey.shot(spec, "specialist-dashboard-offer")
        offer_row.get_by_role("link", name=zh("Review")).click()
        expect(spec.get_by_role("heading", name=COMPLAINT)).to_be_visible()
        spec.locator("ul.slots input[type=radio]").nth(2).check()  # not the earliest (see test_journey)
        journey.shot(spec, "accept-review")
        spec.get_by_role("button", name=zh("Accept consult")).click()
        expect(spec).to_have_url(f"{base}/consults/{ref}")
        expect(spec.locator(".page-head .badge.scheduled")).to_have_text(zh("Scheduled"))
        journey.shot(spec, "specialist-scheduled")

        # 3. Both in the room: presence, chat with its "Seen by" receipt, shared notes, the call.
        for page in (rural, spec):
            page.goto(f"{base}/consults/{ref}")
            page.get_by_role("link", name=zh("Open consult room")).click()
            wait_joined(page)
        expect(rural.locator("#people li .person-name")).to_have_text(
            [zhjs("%(name)s (you)", name=RURAL_NAME), SPECIALIST_NAME]
        )
        expect(spec.locator("#people li .person-name")).to_have_text(
            [RURAL_NAME, zhjs("%(name)s (you)", name=SPECIALIST_NAME)]
        )
        say(rural, "早上好，心电图已附在病历中。")
        expect(spec.locator("#messages .msg .body").last).to_have_text("早上好，心电图已附在病历中。")
        say(spec, "看到了，ST段压低。有肌钙蛋白结果吗？")
        expect(rural.locator("#messages .msg .body").last).to_have_text("看到了，ST段压低。有肌钙蛋白结果吗？")
        expect(spec.locator("#messages .msg.mine .seen").last).to_have_text(
            zhjs("Seen by %(name)s", name=RURAL_NAME))
        expect(rural.locator("#messages .msg.mine .seen").last).to_have_text(
            zhjs("Seen by %(name)s", name=SPECIALIST_NAME))
        journey.shot(rural, "room-chat-rural")

        for page in (rural, spec):  # at desktop width chat, notes and case sit side by side (no tabs)
            expect(page.locator("#notes-status")).to_have_text(zhjs("All changes saved"))
        assessment = rural.get_by_label(zh("Assessment"), exact=True)
        assessment.click()
        assessment.press_sequentially("劳力性心绞痛可能。", delay=15)
        expect(spec.get_by_label(zh("Assessment"), exact=True)).to_have_value("劳力性心绞痛可能。")
        for page in (rural, spec):
            expect(page.locator("#notes-status")).to_have_text(zhjs("All changes saved"))
        journey.shot(spec, "room-notes-specialist")

        rural.get_by_role("button", name=zh("Join call")).click()
        expect(rural.locator("#call-status")).to_have_text(zhjs("Waiting for the other doctor to join…"))
        spec.get_by_role("button", name=zh("Join call")).click()
        for page in (rural, spec):
            expect(page.locator("#call-status")).to_have_text(zhjs("Connected"), timeout=30_000)
        journey.shot(rural, "room-call-connected")
        spec.get_by_role("button", name=zh("Hang up")).click()

        # 4. The specialist signs the recommendation.
        spec.goto(f"{base}/consults/{ref}")
        spec.get_by_role("link", name=zh("Write recommendation")).click()
        spec.get_by_label(zh("Assessment")).fill("劳力性心绞痛，V4至V6导联ST段压低，冠心病可能性大。")
        spec.get_by_label(zh("Recommended plan")).fill("阿司匹林100毫克每日一次，阿托伐他汀40毫克每晚一次。")
        journey.shot(spec, "recommendation-filled")
        spec.get_by_role("button", name=zh("Sign and send")).click()
        expect(spec.locator(".page-head .badge.completed")).to_have_text(zh("Answered"))
        journey.shot(spec, "recommendation-signed")

        # 5. The rural doctor reads and acknowledges it.
        rural.goto(f"{base}/consults/{ref}")
        recommendation = rural.locator("#recommendation")
        expect(recommendation).to_contain_text("阿托伐他汀40毫克每晚一次")
        journey.shot(rural, "rural-reads-recommendation")
        rural.get_by_role("button", name=zh("I have read this recommendation")).click()
        expect(rural.locator(".flash.success")).to_have_text(zh("Recommendation acknowledged."))
        expect(recommendation.locator("h2 .badge.completed")).to_have_text(zh("Acknowledged"))
        expect_images_loaded_or_none(rural)
        journey.shot(rural, "acknowledged")
    except Exception:
        for who, page in (("rural", rural), ("specialist", spec)):
            page.screenshot(path=str(journey.dir / f"journey-failed-{who}.png"), full_page=True)
        raise
    finally:
        for context in (rural_ctx, spec_ctx):
            context.close()

    assert not journey.problems, "\n".join(journey.problems)
    report = []
    if UNTRANSLATED:
        report.append("not translated in the zh_CN catalogs: " + "; ".join(sorted(UNTRANSLATED)))
    for shot, runs in journey.english.items():
        report.append(f"{shot}: English on the page: {runs}")
    assert not report, "\n".join(report)


def expect_images_loaded_or_none(page: Page) -> None:
    """Images on the page (if any) have decoded pixels."""
    if page.locator("img").count():
        expect_images_loaded(page)
