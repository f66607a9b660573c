"""The whole consult journey in headless Chromium, each clinician in their own browser.

Register -> approval -> structured request with an image -> matching (partner hospital first)
-> specialist accepts a slot -> both see the time in their own zone -> signed recommendation
-> acknowledgement. Every page is screenshotted into test-artifacts/journey-NN-name.png.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from PIL import ExifTags, Image, ImageDraw
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.conftest import PASSWORD
from webapp.models import FacilityLevel
from webapp.timefmt import format_local

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 800}
TABLET = {"width": 768, "height": 1024}
RURAL_TZ = "Asia/Urumqi"  # not the specialist's zone: each must see the time in their own
SPECIALIST_TZ = "Asia/Shanghai"
COMPLAINT = "Chest tightness on exertion for 3 weeks"


# --- helpers ---------------------------------------------------------------------------------------


def ecg_photo_with_gps(path: Path) -> Path:
    """A real JPEG that looks like a photographed ECG strip, carrying EXIF GPS and camera tags."""
    img = Image.new("RGB", (960, 540), (253, 236, 236))
    draw = ImageDraw.Draw(img)
    for x in range(0, 960, 24):
        draw.line([(x, 0), (x, 540)], fill=(244, 190, 190), width=2 if x % 120 == 0 else 1)
    for y in range(0, 540, 24):
        draw.line([(0, y), (960, y)], fill=(244, 190, 190), width=2 if y % 120 == 0 else 1)
    beat = [(0, 0), (30, 0), (40, -12), (50, 0), (62, 0), (68, 14), (76, -150), (84, 40), (92, 0),
            (130, 0), (150, -30), (172, 0), (200, 0)]
    for baseline in (150, 390):
        points = [(start + dx, baseline + dy) for start in range(0, 960, 200) for dx, dy in beat]
        draw.line(points, fill=(30, 30, 30), width=3)
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "FieldPhone"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (38.0, 56.0, 12.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (100.0, 27.0, 36.0)
    img.save(path, "JPEG", quality=90, exif=exif)
    with Image.open(path) as check:  # the fixture really carries a location
        assert check.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    return path


@dataclass
class Journey:
    """Numbered full-page screenshots, plus a watch on browser errors across every page."""

    dir: Path
    n: int = 0
    problems: list[str] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)

    def shot(self, page: Page, name: str) -> None:
        self.n += 1
        path = self.dir / f"journey-{self.n:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)

    def watch(self, page: Page, who: str) -> Page:
        def on_console(msg) -> None:
            # A 4xx page (e.g. a refused sign-in) logs "Failed to load resource"; real problems
            # (CSP refusals, script errors) are anything else at error level.
            if msg.type == "error" and "Failed to load resource" not in msg.text:
                self.problems.append(f"{who} console: {msg.text}")

        def on_response(response) -> None:
            if response.status >= 500 or (response.status >= 400 and response.request.resource_type
                                          in {"stylesheet", "image", "script", "font"}):
                self.problems.append(f"{who} {response.status} {response.request.method} {response.url}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.problems.append(f"{who} page error: {exc}"))
        page.on("response", on_response)
        return page


def open_page(browser: Browser, journey: Journey, who: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport=DESKTOP, locale="en-GB")
    context.set_default_timeout(10_000)
    return context, journey.watch(context.new_page(), who)


def sign_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def at_tablet_width(page: Page, journey: Journey, name: str) -> None:
    """Screenshot at 768 px: the layout must reflow, with nothing wider than the screen."""
    page.set_viewport_size(TABLET)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: the page scrolls sideways by {overflow}px at {TABLET['width']}px"
    journey.shot(page, name)
    page.set_viewport_size(DESKTOP)


def expect_images_loaded(page: Page) -> None:
    """Every <img> on the page has decoded pixels (no broken-image icons)."""
    images = page.locator("img")
    assert images.count() > 0
    for i in range(images.count()):
        images.nth(i).scroll_into_view_if_needed()  # lazy images load once near the viewport
        expect(images.nth(i)).to_be_visible()
    page.wait_for_function("() => Array.from(document.images).every(img => img.complete)")
    broken = page.evaluate("() => Array.from(document.images).filter(img => !img.naturalWidth).map(img => img.src)")
    assert not broken, f"broken images: {broken}"


# --- the journey -------------------------------------------------------------------------------------


def test_consult_journey(browser, live_server, make, shots, tmp_path):
    base = live_server.url
    journey = Journey(shots)

    # 1. The world: a county hospital paired with a regional centre; cardiologists at both.
    county = make.facility("Minle County People's Hospital", FacilityLevel.COUNTY_HOSPITAL)
    regional = make.facility("Zhangye Regional Medical Centre", FacilityLevel.REGIONAL_MEDICAL_CENTRE)
    elsewhere = make.facility("Lanzhou Second Provincial Hospital", FacilityLevel.TERTIARY_HOSPITAL)
    make.partnership(county, regional)
    coordinator = make.coordinator(name="Li Na", email="coordinator@huizhen.example")
    partner_cardio = make.specialist(facility=regional, name="Dr Zhou Wei", email="zhou@huizhen.example",
                                     timezone=SPECIALIST_TZ)
    other_cardio = make.specialist(facility=elsewhere, name="Dr An Bo", email="an@huizhen.example")
    make.availability(partner_cardio, (0, 24))
    make.availability(other_cardio, (0, 24))  # same availability: only the partnership ranks Zhou first
    photo = ecg_photo_with_gps(tmp_path / "ecg-strip.jpg")

    rural_ctx, rural = open_page(browser, journey, "rural")
    coord_ctx, coord = open_page(browser, journey, "coordinator")
    spec_ctx, spec = open_page(browser, journey, "specialist")
    try:
        # 2. A rural doctor registers and is told to wait for approval.
        rural.goto(f"{base}/login")
        expect(rural.get_by_role("heading", name="Sign in")).to_be_visible()
        journey.shot(rural, "login")
        rural.get_by_role("link", name="Register").click()
        expect(rural.get_by_role("heading", name="Register as a clinician")).to_be_visible()
        rural.get_by_label("Full name").fill("Dr Ma Xiaoli")
        rural.get_by_label("Work email").fill("ma.xiaoli@minle-hospital.example")
        rural.get_by_label("Password", exact=True).fill(PASSWORD)
        rural.get_by_label("Repeat password").fill(PASSWORD)
        rural.get_by_label("I am a").select_option(label="Rural doctor (I request consults)")
        rural.get_by_label("Facility").select_option(
            label="Minle County People's Hospital — County hospital, Gansu")
        rural.get_by_label("Medical licence number").fill("110620190045")
        rural.get_by_label("Time zone").select_option(RURAL_TZ)
        expect(rural.get_by_label("中文 (Chinese)")).to_be_checked()
        rural.get_by_label("English").check()
        journey.shot(rural, "register-filled")
        rural.get_by_role("button", name="Register").click()
        expect(rural.get_by_role("heading", name="Registration received")).to_be_visible()
        expect(rural.get_by_text("You can sign in once your account is approved.")).to_be_visible()
        journey.shot(rural, "registration-received")

        rural.get_by_role("link", name="Back to sign in").click()
        rural.get_by_label("Email").fill("ma.xiaoli@minle-hospital.example")
        rural.get_by_label("Password").fill(PASSWORD)
        rural.get_by_role("button", name="Sign in").click()
        expect(rural.locator(".flash.error")).to_have_text(
            "Your registration is waiting for a coordinator's approval.")
        expect(rural.get_by_role("button", name="Sign out")).to_have_count(0)
        journey.shot(rural, "login-awaiting-approval")

        # 3. The coordinator approves the registration.
        sign_in(coord, base, coordinator.email)
        expect(coord.get_by_role("heading", name="Programme overview")).to_be_visible()
        expect(coord.locator(".stat").first.locator(".n")).to_have_text("1")
        expect(coord.locator(".stat").first).to_contain_text("registrations to verify")
        expect(coord.get_by_text("Dr Ma Xiaoli")).to_be_visible()
        journey.shot(coord, "coordinator-dashboard")
        coord.get_by_role("navigation", name="Main").get_by_role("link", name="Clinicians").click()
        expect(coord.get_by_role("heading", name="Clinicians")).to_be_visible()
        row = coord.locator("tr", has_text="ma.xiaoli@minle-hospital.example").first
        expect(row).to_contain_text("Rural doctor")
        expect(row).to_contain_text("Minle County People's Hospital")
        expect(row).to_contain_text("110620190045")
        journey.shot(coord, "clinicians-pending")
        row.get_by_role("button", name="Approve").click()
        expect(coord.locator(".flash.success")).to_have_text("Dr Ma Xiaoli can now sign in.")
        expect(coord.get_by_text("No registrations are waiting.")).to_be_visible()
        expect(coord.locator("tr", has_text="ma.xiaoli@minle-hospital.example")).to_contain_text("Approved")
        journey.shot(coord, "clinicians-approved")

        # 4. The rural doctor files a structured request with an ECG photo.
        sign_in(rural, base, "ma.xiaoli@minle-hospital.example")
        expect(rural.get_by_role("heading", name="My consult requests")).to_be_visible()
        expect(rural.get_by_text(f"times shown in {RURAL_TZ}")).to_be_visible()
        expect(rural.get_by_text("You have not requested a consult yet.")).to_be_visible()
        journey.shot(rural, "rural-dashboard-empty")
        rural.get_by_role("navigation", name="Main").get_by_role("link", name="New request").click()
        expect(rural.get_by_role("heading", name="New consult request")).to_be_visible()
        expect(rural.get_by_text("Save the draft first, then attach")).to_be_visible()
        journey.shot(rural, "new-request-empty")

        at_tablet_width(rural, journey, "tablet-new-request")

        rural.get_by_label("Age (years)").fill("58")
        rural.get_by_label("Sex").select_option("male")
        rural.get_by_label("Specialty needed").select_option(label="Cardiology")
        rural.get_by_label("Urgent", exact=True).check()
        rural.get_by_label("Chief complaint").fill(COMPLAINT)
        rural.get_by_label("History").fill(
            "Farmer, smoker (30 pack-years). Three weeks of central chest tightness climbing to his "
            "fields, relieved by rest within 5 minutes. No pain at rest. Hypertension, untreated.")
        rural.get_by_label("Examination findings").fill(
            "Alert, no distress. Heart sounds normal, no murmur. Chest clear. No oedema.\n"
            "Resting ECG: 1 mm ST depression V4–V6. Troponin not available here.")
        rural.get_by_label("BP systolic").fill("162")
        rural.get_by_label("BP diastolic").fill("96")
        rural.get_by_label("Heart rate").fill("88")
        rural.get_by_label("Respiratory rate").fill("18")
        rural.get_by_label("Temperature °C").fill("36.7")
        rural.get_by_label("SpO₂ %").fill("96")
        rural.get_by_label("Weight kg").fill("71.5")
        rural.get_by_label("Current treatment").fill("Aspirin 100 mg daily started yesterday.")
        rural.get_by_label("Your question for the specialist").fill(
            "Does he need angiography at the regional centre, or can we manage medically here?")
        rural.get_by_label("When you and the patient can join a call").fill("Weekday mornings")
        journey.shot(rural, "new-request-filled")
        rural.get_by_role("button", name="Save draft").click()

        expect(rural.locator(".flash.success")).to_have_text(
            "Draft saved. Add attachments below, then send the request.")
        expect(rural.get_by_role("heading", name="Edit consult request")).to_be_visible()
        expect(rural.get_by_label("Chief complaint")).to_have_value(COMPLAINT)
        expect(rural.get_by_label("Urgent", exact=True)).to_be_checked()
        expect(rural.get_by_label("Weight kg")).to_have_value("71.5")
        ref = re.search(r"/consults/([^/]+)/edit$", rural.url).group(1)
        preview = rural.locator(".card", has=rural.get_by_role("heading", name="Who will see it"))
        expect(preview.locator("li")).to_have_count(2)
        expect(preview.locator("li").first).to_contain_text("Dr Zhou Wei")
        expect(preview.locator("li").first).to_contain_text("Partner hospital")
        expect(preview.locator("li").nth(1)).to_contain_text("Dr An Bo")
        journey.shot(rural, "draft-saved")

        rural.get_by_label("File").set_input_files(str(photo))
        rural.get_by_label("What it shows").fill("12-lead ECG at rest")
        rural.get_by_role("button", name="Attach file").click()
        expect(rural.locator(".flash.success")).to_have_text("File attached.")
        thumb = rural.locator(".thumbs .thumb")
        expect(thumb).to_have_count(1)
        expect(thumb.locator("img")).to_have_attribute("alt", "12-lead ECG at rest")
        expect(thumb).to_contain_text("960×540")
        expect_images_loaded(rural)
        journey.shot(rural, "draft-with-attachment")

        # The stored photo lost its location: fetch it as the browser would and read its EXIF.
        image_url = base + thumb.locator("img").get_attribute("src")
        served = rural_ctx.request.get(image_url)
        assert served.ok and served.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(served.body())) as stored:
            assert stored.size == (960, 540)
            assert not stored.getexif().get_ifd(ExifTags.IFD.GPSInfo)
            assert ExifTags.Base.Make not in stored.getexif()

        rural.get_by_role("button", name="Send request").click()
        expect(rural.locator(".flash.success")).to_have_text("Your request was sent to the matching specialists.")
        expect(rural).to_have_url(f"{base}/consults/{ref}")
        expect(rural.get_by_role("heading", name=COMPLAINT)).to_be_visible()
        expect(rural.locator(".page-head .badge.requested")).to_have_text("Awaiting specialist")
        case = rural.locator("dl.case")
        expect(case).to_contain_text("58 years, Male")
        expect(case).to_contain_text("162/96 mmHg")
        expect(case).to_contain_text("36.7 °C")
        expect(case).to_contain_text("Does he need angiography")
        matched = rural.locator(".card", has=rural.get_by_role("heading", name="Matched specialists"))
        rows = matched.locator("ol.matches li")
        expect(rows).to_have_count(2)
        expect(rows.first).to_contain_text("Dr Zhou Wei")
        expect(rows.first).to_contain_text("Zhangye Regional Medical Centre")
        expect(rows.first.locator(".badge.partner")).to_have_text("Partner hospital")
        expect(rows.nth(1)).to_contain_text("Dr An Bo")
        expect(rows.nth(1).locator(".badge.partner")).to_have_count(0)
        expect(rural.get_by_text("No specialist has taken this request yet.")).to_be_visible()
        expect_images_loaded(rural)
        journey.shot(rural, "request-sent")

        # 5. The partner-hospital cardiologist reviews the request and accepts a time.
        sign_in(spec, base, partner_cardio.email)
        offered = spec.locator(".card", has=spec.get_by_role("heading", name="Requests offered to you"))
        expect(offered.locator("h2 .badge")).to_have_text("1")
        offer_row = offered.locator("tbody tr")
        expect(offer_row).to_have_count(1)
        expect(offer_row).to_contain_text(COMPLAINT)
        expect(offer_row).to_contain_text("Dr Ma Xiaoli")
        expect(offer_row).to_contain_text("Urgent")
        expect(spec.get_by_text("Nothing booked.")).to_be_visible()
        journey.shot(spec, "specialist-dashboard-offer")
        offer_row.get_by_role("link", name="Review").click()

        expect(spec.get_by_role("heading", name=COMPLAINT)).to_be_visible()
        expect(spec.get_by_text("from Dr Ma Xiaoli, Minle County People's Hospital")).to_be_visible()
        expect(spec.locator(".thumbs img")).to_have_attribute("alt", "12-lead ECG at rest")
        expect_images_loaded(spec)
        expect(spec.get_by_label("Answer in writing — no call needed")).to_be_checked()
        # The second free slot: the earliest one lies just past the booking lead and, when the
        # clock crosses a half hour while this page is open, is rightly refused as too soon.
        chosen_slot = spec.locator("ul.slots input[type=radio]").nth(2)
        slot_value = chosen_slot.get_attribute("value")
        starts_at = datetime.fromisoformat(slot_value)
        specialist_label = format_local(starts_at, SPECIALIST_TZ)
        expect(spec.get_by_label(specialist_label)).to_have_value(slot_value)
        journey.shot(spec, "accept-review")
        chosen_slot.check()
        spec.get_by_role("button", name="Accept consult").click()

        expect(spec.locator(".flash.success")).to_have_text("You accepted the consult. The time is booked.")
        expect(spec).to_have_url(f"{base}/consults/{ref}")
        expect(spec.locator(".page-head .badge.scheduled")).to_have_text("Scheduled")
        consultation = spec.locator(".card", has=spec.get_by_role("heading", name="Consultation", exact=True))
        expect(consultation.locator("strong").first).to_have_text(specialist_label)
        expect(spec.get_by_role("link", name="Write recommendation")).to_be_visible()
        journey.shot(spec, "specialist-scheduled")

        # 6. The rural doctor reloads and sees the booked time in their own zone, named.
        rural.reload()
        rural_label = format_local(starts_at, RURAL_TZ)
        assert rural_label.endswith(f"({RURAL_TZ})") and rural_label != specialist_label
        expect(rural.locator(".page-head .badge.scheduled")).to_have_text("Scheduled")
        expect(rural.get_by_text("specialist Dr Zhou Wei")).to_be_visible()
        consultation = rural.locator(".card", has=rural.get_by_role("heading", name="Consultation", exact=True))
        expect(consultation.locator("strong").first).to_have_text(rural_label)
        expect(consultation).to_contain_text(f"For the specialist: {specialist_label}")
        matched = rural.locator(".card", has=rural.get_by_role("heading", name="Matched specialists"))
        expect(matched.locator("li").first.locator(".badge.accepted")).to_have_text("Accepted")
        expect(matched.locator("li").nth(1).locator(".badge.withdrawn")).to_have_text("Withdrawn")
        journey.shot(rural, "rural-sees-booking")

        at_tablet_width(rural, journey, "tablet-consult-view")

        rural.get_by_role("link", name="Dashboard").click()
        requests = rural.locator(".card", has=rural.get_by_role("heading", name="Requests", exact=True))
        expect(requests.locator("tbody tr")).to_have_count(1)
        expect(requests.locator("tbody tr")).to_contain_text("Scheduled")
        expect(requests.locator("tbody tr")).to_contain_text(rural_label)
        upcoming = rural.locator(".card", has=rural.get_by_role("heading", name="Upcoming consultations"))
        expect(upcoming).to_contain_text(rural_label)
        expect(upcoming).to_contain_text("Dr Ma Xiaoli ⇄ Dr Zhou Wei")
        journey.shot(rural, "rural-dashboard-booked")

        # 7. The specialist writes and signs the recommendation.
        spec.get_by_role("link", name="Write recommendation").click()
        expect(spec.get_by_role("heading", name="Recommendation", exact=True)).to_be_visible()
        spec.get_by_label("Assessment").fill(
            "Typical exertional angina with ST depression in V4–V6: likely significant coronary disease.")
        spec.get_by_label("Recommended plan").fill(
            "Aspirin 100 mg daily, atorvastatin 40 mg nightly, metoprolol 25 mg twice daily. "
            "Start amlodipine for blood pressure. Sublingual nitroglycerin as needed.")
        spec.get_by_label("Refer the patient to a higher-level hospital").check()
        spec.get_by_label("Reason for referral").fill("Coronary angiography at Zhangye within 2 weeks.")
        spec.get_by_label("Follow-up").fill("Repeat ECG and BP in 1 week; call us at once if pain at rest.")
        journey.shot(spec, "recommendation-filled")
        spec.get_by_role("button", name="Sign and send").click()

        expect(spec.locator(".flash.success")).to_have_text(
            "Recommendation signed and sent. The consult is now read-only.")
        expect(spec.locator(".page-head .badge.completed")).to_have_text("Answered")
        recommendation = spec.locator("#recommendation")
        expect(recommendation).to_contain_text("Yes — Coronary angiography at Zhangye within 2 weeks.")
        expect(recommendation).to_contain_text("Signed by Dr Zhou Wei, Cardiology")
        expect(recommendation).to_contain_text("the record matches its signature")
        expect(spec.get_by_role("link", name="Write recommendation")).to_have_count(0)
        journey.shot(spec, "recommendation-signed")

        # 8. The rural doctor reads the recommendation and acknowledges it.
        rural.goto(f"{base}/consults/{ref}")
        recommendation = rural.locator("#recommendation")
        expect(recommendation.get_by_role("heading", name="Specialist recommendation")).to_be_visible()
        expect(recommendation).to_contain_text("Typical exertional angina")
        expect(recommendation).to_contain_text("atorvastatin 40 mg nightly")
        expect(recommendation).to_contain_text("Yes — Coronary angiography at Zhangye within 2 weeks.")
        expect(recommendation).to_contain_text("Repeat ECG and BP in 1 week")
        expect(recommendation).to_contain_text(f"({RURAL_TZ})")
        expect(recommendation.locator(".badge.completed")).to_have_count(0)
        journey.shot(rural, "rural-reads-recommendation")
        rural.get_by_role("button", name="I have read this recommendation").click()

        expect(rural.locator(".flash.success")).to_have_text("Recommendation acknowledged.")
        expect(recommendation.locator("h2 .badge.completed")).to_have_text("Acknowledged")
        expect(recommendation).to_contain_text("Acknowledged by the requester on")
        expect(rural.get_by_role("button", name="I have read this recommendation")).to_have_count(0)
        journey.shot(rural, "acknowledged")

        spec.goto(base + "/")
        answered = spec.locator(".card", has=spec.get_by_role("heading", name="Recently answered"))
        expect(answered).to_contain_text(COMPLAINT)
        expect(answered).to_contain_text("Answered")
        expect(offered).to_contain_text("No open requests for you right now.")
        journey.shot(spec, "specialist-dashboard-done")
    except Exception:
        for who, page in (("rural", rural), ("coordinator", coord), ("specialist", spec)):
            page.screenshot(path=str(shots / f"journey-failed-{who}.png"), full_page=True)
        raise
    finally:
        for context in (rural_ctx, coord_ctx, spec_ctx):
            context.close()

    assert not journey.problems, "\n".join(journey.problems)
    assert all(p.stat().st_size > 10_000 for p in journey.shots)
