"""A second specialist signs an opinion in the browser; it shows under the lead's recommendation at
desktop and phone width, with the participants' history (screenshots in test-artifacts/opinion-*.png)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD, sign_in_page
from webapp.consults import opinions
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.models import FacilityLevel

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def test_a_second_opinion_is_signed_and_shown_under_the_recommendation(browser, live_server, make, shots):
    county = make.facility("Minle County People's Hospital", FacilityLevel.COUNTY_HOSPITAL)
    regional = make.facility("Zhangye Regional Medical Centre", FacilityLevel.REGIONAL_MEDICAL_CENTRE)
    rural = make.rural(facility=county, name="Dr Wang Fang", email="wang.fang@minle.example")
    lead = make.specialist(facility=regional, name="Dr Zhou Wei", email="zhou.wei@zhangye.example")
    consult = make.accepted(rural, lead, chief_complaint="Palpitations with dizziness")
    neuro = make.second_specialist(consult, name="Dr An Bo", email="an.bo@zhangye.example")
    make.trainee(consult, name="Dr Li Min")
    consults.save_recommendation(lead, consult.ref, consults.RecommendationData(
        assessment="Paroxysmal atrial fibrillation, CHA2DS2-VASc 2.",
        plan="Start anticoagulation; Holter monitor; review in four weeks."), sign=True)
    opinions.add_opinion(neuro, consult.ref, "Agree with anticoagulation.\nThe dizziness is not vestibular; "
                         "no further neurological work-up is needed.")
    coordinator = make.coordinator(name="Li Na", email="li.na@huizhen.example")
    db.session.commit()  # end this session's read: the live server writes next (SQLite)
    base = live_server.url

    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    sign_in_page(page, base, neuro.email)
    page.goto(f"{base}/consults/{consult.ref}")
    page.fill("#opinion-text", "Addendum after the MRI: no ischaemic lesion.")
    page.get_by_role("button", name="Sign opinion").click()
    expect(page.locator(".flash.success")).to_contain_text("Your opinion is signed")
    expect(page.locator("#opinions article.opinion")).to_have_count(2)
    expect(page.locator("#opinions")).to_contain_text("Opinion signed by Dr An Bo")
    expect(page.locator("#participants")).to_contain_text("accepted")
    rec_box = page.locator("#recommendation").bounding_box()
    op_box = page.locator("#opinions").bounding_box()
    assert rec_box and op_box and op_box["y"] >= rec_box["y"] + rec_box["height"]
    page.screenshot(path=str(shots / "opinion-desktop.png"), full_page=True)
    context.close()

    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    sign_in_page(page, base, rural.email)
    page.goto(f"{base}/consults/{consult.ref}")
    expect(page.locator("#opinions article.opinion")).to_have_count(2)
    expect(page.locator("#opinion-form")).to_have_count(0)  # the requester reads, does not write one
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    rec_box = page.locator("#recommendation").bounding_box()
    op_box = page.locator("#opinions").bounding_box()
    case_box = page.locator("#attachments").bounding_box()
    assert rec_box and op_box and case_box and rec_box["y"] < op_box["y"] < case_box["y"]
    page.screenshot(path=str(shots / "opinion-phone.png"), full_page=True)
    context.close()

    context = browser.new_context(viewport=PHONE, locale="zh-CN", extra_http_headers={"Accept-Language": "zh-CN"})
    page = context.new_page()
    page.goto(f"{base}/login")
    page.fill("#email", coordinator.email)
    page.fill("#password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
    figures = page.locator("#participation-figures")
    expect(figures).to_contain_text("名学员从 1 次会诊中学习")
    expect(figures.locator('[data-figure="opinions"]')).to_have_text("2")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(shots / "opinion-coordinator-zh-phone.png"), full_page=True)
    context.close()
