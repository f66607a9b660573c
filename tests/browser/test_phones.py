"""Phones and tablets: every page of the journey fits 360, 390 and 768 px; the room has a phone layout.

Each page is opened with data on it (a world built through the real services) and checked at each
width for sideways scrolling (``scrollWidth <= innerWidth``); a full-page screenshot of each is
saved as test-artifacts/phone-<width>-<role>-<page>.png. The consult room at 390×844 with a call
on keeps the video and the Hang up button on screen while the chat tab is shown and after a message
is sent. The "turn on the sound" button shows only when the browser really refused to autoplay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import CHROMIUM, CHROMIUM_ARGS, PASSWORD, Factory
from webapp.consults import services as consults
from webapp.models import AccountStatus, FacilityLevel, Role
from webapp.scheduling import services as scheduling

pytestmark = pytest.mark.browser

WIDTHS = (360, 390, 768)
PHONE = {"width": 390, "height": 844}


@dataclass
class World:
    rural: object
    specialist: object
    coordinator: object
    draft: str
    requested: str
    accepted: str
    scheduled: str
    completed: str
    facility_id: int


def build_world(make: Factory) -> World:
    """Users of each role and consults in every state a page shows, with long real-looking names."""
    county = make.facility("Minle County People's Hospital", FacilityLevel.COUNTY_HOSPITAL)
    regional = make.facility("Zhangye Regional Medical Centre", FacilityLevel.REGIONAL_MEDICAL_CENTRE)
    make.partnership(county, regional)
    rural = make.rural(facility=county, name="Dr Wang Fang", email="wang.fang@minle-hospital.example")
    specialist = make.specialist(facility=regional, name="Dr Zhou Wei", email="zhou.wei@zhangye-centre.example")
    other = make.specialist(facility=regional, name="Dr An Bo", email="an.bo@zhangye-centre.example")
    coordinator = make.coordinator(name="Li Na", email="li.na.coordinator@huizhen.example")
    make.user(Role.SPECIALIST, facility=regional, status=AccountStatus.PENDING, name="Dr Pending Registrant",
              email="pending.registrant.with.a.long.address@zhangye-centre.example")
    make.availability(specialist)
    make.availability(other)
    draft = make.draft(rural, chief_complaint="Persistent cough and evening fever for two weeks")
    requested = make.requested(rural, chief_complaint="Exertional chest tightness, three weeks")
    accepted = make.accepted(rural, specialist, chief_complaint="Palpitations with dizziness")
    slot = scheduling.open_slots(specialist)[1].starts_at
    scheduled = consults.accept(specialist, make.requested(rural, chief_complaint="Syncope after exercise").ref, slot)
    completed = make.accepted(rural, specialist, chief_complaint="Hypertension poorly controlled on two drugs")
    consults.save_recommendation(specialist, completed.ref, consults.RecommendationData(
        assessment="Resistant hypertension; secondary causes not yet excluded.",
        plan="Add a thiazide; check potassium and creatinine in two weeks.", follow_up="Two weeks"), sign=True)
    declined = make.requested(rural, chief_complaint="Unexplained weight loss and night sweats")
    for s in (specialist, other):  # every offer declined: the request waits in the coordinator's queue
        consults.decline(s, declined.ref, "Outside my practice this week")
    return World(rural=rural, specialist=specialist, coordinator=coordinator, draft=draft.ref,
                 requested=requested.ref, accepted=accepted.ref, scheduled=scheduled.ref,
                 completed=completed.ref, facility_id=county.id)


def sign_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("main button[type=submit]")  # not the header's language switch
    page.wait_for_url(lambda url: "/login" not in url)


def pages_of(world: World) -> dict[str, list[tuple[str, str]]]:
    """Each role's pages of the journey: (name, path)."""
    return {
        "anonymous": [("login", "/login"), ("register", "/register"), ("forgot", "/password/forgot")],
        "rural": [
            ("dashboard", "/"), ("new-request", "/consults/new"), ("edit-request", f"/consults/{world.draft}/edit"),
            ("consult-requested", f"/consults/{world.requested}"), ("book", f"/consults/{world.accepted}/book"),
            ("consult-answered", f"/consults/{world.completed}"), ("room", f"/consults/{world.scheduled}/room"),
            ("precall", "/precall"), ("profile", "/account/password"),
        ],
        "specialist": [
            ("dashboard", "/"), ("accept", f"/consults/{world.requested}/accept"),
            ("consult-scheduled", f"/consults/{world.scheduled}"), ("availability", "/availability"),
            ("sign", f"/consults/{world.accepted}/answer"), ("room", f"/consults/{world.scheduled}/room"),
            ("notes-history", f"/consults/{world.scheduled}/notes/history"),
        ],
        "coordinator": [
            ("dashboard", "/"), ("queue", "/admin/queue"), ("clinicians", "/admin/registrations"),
            ("facilities", "/admin/facilities"), ("facility-edit", f"/admin/facilities/{world.facility_id}/edit"),
            ("audit-log", "/admin/audit"),
        ],
    }


@pytest.mark.parametrize("role", ["anonymous", "rural", "specialist", "coordinator"])
def test_every_page_fits_phone_and_tablet_widths(role, browser: Browser, live_server, make, shots):
    world = build_world(make)
    context = browser.new_context(viewport={"width": WIDTHS[0], "height": 800}, locale="en-GB")
    context.set_default_timeout(20_000)
    page = context.new_page()
    try:
        if role != "anonymous":
            sign_in(page, live_server.url, getattr(world, role).email)
        overflowing = []
        for name, path in pages_of(world)[role]:
            response = page.goto(live_server.url + path)
            assert response is not None and response.status == 200, f"{role} {path}: {response and response.status}"
            for width in WIDTHS:
                page.set_viewport_size({"width": width, "height": 800})
                page.wait_for_function(f"() => window.innerWidth === {width}")
                sizes = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
                page.screenshot(path=str(shots / f"phone-{width}-{role}-{name}.png"), full_page=True)
                if sizes[0] > sizes[1]:
                    overflowing.append(f"{name} at {width}px: {sizes[0]}px wide")
        assert not overflowing, f"{role}: pages wider than the screen: {overflowing}"
    finally:
        context.close()


def test_tables_become_labelled_cards_on_a_phone(browser: Browser, live_server, make):
    world = build_world(make)
    context = browser.new_context(viewport=PHONE, locale="en-GB")
    page = context.new_page()
    try:
        sign_in(page, live_server.url, world.rural.email)
        cell = page.locator("table td[data-label='Status']").first
        expect(cell).to_be_visible()
        cells = page.locator("table tbody tr").first.locator("td")
        first, second = cells.nth(0).bounding_box(), cells.nth(1).bounding_box()
        assert second["y"] >= first["y"] + first["height"] - 1, "the cells of a row are not stacked"
        label = page.evaluate("() => getComputedStyle("
                              "document.querySelector(\"td[data-label='Status']\"), '::before').content")
        assert "Status" in label, label
        # The upcoming consultation is not pushed below every row of the table.
        upcoming = page.get_by_role("heading", name="Upcoming consultations").bounding_box()
        table_end = page.locator("table").first.bounding_box()
        assert upcoming["y"] < table_end["y"], "Upcoming consultations is below the whole table on a phone"
    finally:
        context.close()


# --- the consult room on a phone --------------------------------------------------------------------


def _inside(box: dict | None, viewport: dict) -> bool:
    return box is not None and box["y"] >= 0 and box["x"] >= 0 and \
        box["y"] + box["height"] <= viewport["height"] and box["x"] + box["width"] <= viewport["width"]


def test_room_on_a_phone_keeps_the_video_and_hang_up_on_screen_while_chatting(browser: Browser, live_server, make,
                                                                              shots):
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    make.chat_history(consult, 40)  # a chat long enough to scroll
    room = f"{live_server.url}/consults/{consult.ref}/room"
    ctx_r = browser.new_context(viewport=PHONE, locale="en-GB", has_touch=True, is_mobile=True)
    ctx_s = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    try:
        phone, desk = ctx_r.new_page(), ctx_s.new_page()
        for page in (phone, desk):
            page.set_default_timeout(20_000)
        sign_in(phone, live_server.url, rural.email)
        sign_in(desk, live_server.url, specialist.email)
        phone.goto(room)
        desk.goto(room)
        tabs = phone.get_by_role("tablist")
        expect(tabs).to_be_visible()
        phone.click("#call-join")
        desk.click("#call-join")
        expect(phone.locator("#call-status")).to_have_text("Connected", timeout=60_000)  # a busy machine
        phone.screenshot(path=str(shots / "phone-room-01-call.png"))

        chat_tab = phone.get_by_role("tab", name="Chat")
        notes_tab = phone.get_by_role("tab", name="Notes")
        chat_tab.click()
        expect(chat_tab).to_have_attribute("aria-selected", "true")
        expect(notes_tab).to_have_attribute("aria-selected", "false")
        expect(phone.locator("#messages")).to_be_visible()
        expect(phone.locator("#notes")).to_be_hidden()
        phone.locator("#chat-input").scroll_into_view_if_needed()
        for what in ("video", "hang up"):
            box = (phone.locator("#call-remote") if what == "video" else phone.locator("#call-leave")).bounding_box()
            assert _inside(box, PHONE), f"the {what} is off screen while the chat is shown: {box}"
        phone.fill("#chat-input", "Blood pressure now 150/95 after rest")
        phone.click("#chat-send")
        expect(phone.locator("#messages .msg.mine").last).to_contain_text("150/95")
        expect(desk.locator("#messages")).to_contain_text("150/95")
        phone.locator("#chat-input").scroll_into_view_if_needed()
        phone.screenshot(path=str(shots / "phone-room-02-chatting.png"))
        assert _inside(phone.locator("#call-remote").bounding_box(), PHONE), "the video left the screen after sending"
        assert _inside(phone.locator("#call-leave").bounding_box(), PHONE), "Hang up left the screen after sending"
        assert phone.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")

        # Keyboard: arrow keys move between the tabs and show their panel.
        chat_tab.focus()
        phone.keyboard.press("ArrowRight")
        expect(notes_tab).to_be_focused()
        expect(notes_tab).to_have_attribute("aria-selected", "true")
        expect(phone.locator("#notes")).to_be_visible()
        expect(phone.locator("#messages")).to_be_hidden()
        phone.keyboard.press("End")
        expect(phone.get_by_role("tab", name="Case")).to_have_attribute("aria-selected", "true")
        phone.keyboard.press("Home")
        expect(chat_tab).to_have_attribute("aria-selected", "true")
        phone.get_by_role("tab", name="Notes").click()
        phone.screenshot(path=str(shots / "phone-room-03-notes.png"))
        assert _inside(phone.locator("#call-leave").bounding_box(), PHONE)

        # On a desktop the room keeps its side-by-side layout: no tabs, chat and notes both shown.
        expect(desk.get_by_role("tablist")).to_be_hidden()
        expect(desk.locator("#messages")).to_be_visible()
        expect(desk.locator("#notes")).to_be_visible()
    finally:
        ctx_r.close()
        ctx_s.close()


# --- the "turn on the sound" button ------------------------------------------------------------------


def _launch(browser: Browser, policy: str) -> Browser:
    """A second Chromium from the same Playwright, with the given autoplay policy."""
    return browser.browser_type.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, f"--autoplay-policy={policy}"])


@pytest.mark.parametrize("policy", ["no-user-gesture-required", "document-user-activation-required"])
def test_sound_button_stays_hidden_when_the_call_plays_with_sound(policy, browser, live_server, make, shots):
    """In a real call the other doctor's sound plays, so the button never shows.

    The phone joins without any user gesture (it re-joins from sessionStorage, as after a reload).
    Chromium lets a page that is capturing the camera and microphone autoplay with sound even
    under ``document-user-activation-required`` (measured), so both policies play here.
    """
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    room = f"{live_server.url}/consults/{consult.ref}/room"
    ctx_s = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    own = _launch(browser, policy)
    try:
        ctx_r = own.new_context(viewport=PHONE, locale="en-GB")
        phone, desk = ctx_r.new_page(), ctx_s.new_page()
        for page in (phone, desk):
            page.set_default_timeout(20_000)
        sign_in(desk, live_server.url, specialist.email)
        desk.goto(room)
        desk.click("#call-join")
        _sign_in_without_gesture(ctx_r, live_server.url, rural.email)
        ctx_r.add_init_script(f"sessionStorage.setItem('huizhen-call-{consult.ref}', '1')")
        phone.goto(room)
        # Nothing is evaluated in the phone's page until the call is up: Playwright runs page
        # scripts as a user gesture, which would lift an autoplay block.
        # Two Chromium processes negotiate here: on a saturated 2-core machine (a PostgreSQL run
        # beside other work) this took more than 30 s once; a quiet one connects in a few seconds.
        expect(desk.locator("#call-status")).to_have_text("Connected", timeout=60_000)
        expect(phone.locator("#call-status")).to_have_text("Connected", timeout=60_000)
        phone.wait_for_function("() => { const v = document.getElementById('call-remote');"
                                " return v.srcObject && !v.paused && v.readyState >= 2; }", timeout=30_000)
        phone.wait_for_timeout(1000)  # time for a refused play() to show the button (it must not)
        expect(phone.locator("#call-unmute")).to_be_hidden()
        assert phone.evaluate("() => document.getElementById('call-remote').muted") is False
        phone.screenshot(path=str(shots / f"phone-sound-{policy}.png"))
    finally:
        own.close()  # with the phone's context
        ctx_s.close()  # the desk's is in the session's browser: left open, its sockets would stay


# A real stream with sound (a tone and a drawn picture) given to the room's remote video and played
# through call.js by a page script, with no user gesture: a browser requiring activation refuses it.
PLAY_WITHOUT_GESTURE = """
document.addEventListener("DOMContentLoaded", () => setTimeout(() => {
  const audio = new AudioContext(), tone = audio.createOscillator(), out = audio.createMediaStreamDestination();
  tone.connect(out); tone.start();
  const canvas = document.createElement("canvas"); canvas.width = 64; canvas.height = 48;
  const g = canvas.getContext("2d");
  setInterval(() => { g.fillStyle = "#" + Math.floor(Math.random() * 4096).toString(16).padStart(3, "0");
                      g.fillRect(0, 0, 64, 48); }, 50);
  const video = document.getElementById("call-remote");
  video.srcObject = new MediaStream([...out.stream.getAudioTracks(), ...canvas.captureStream(10).getVideoTracks()]);
  window.huizhenCall.playRemote();
  window.playedWithoutGesture = true;
}, 0));
"""


@pytest.mark.parametrize("policy, blocked", [
    ("no-user-gesture-required", False),
    ("document-user-activation-required", True),
])
def test_sound_button_shows_only_when_autoplay_is_blocked(policy, blocked, browser, live_server, make, shots):
    """Given the other doctor's stream while not capturing, the room shows the sound button only if
    the browser really refused to play it with sound, then plays muted; the button turns it on."""
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    own = _launch(browser, policy)
    try:
        context = own.new_context(viewport=PHONE, locale="en-GB")
        _sign_in_without_gesture(context, live_server.url, rural.email)
        context.add_init_script(PLAY_WITHOUT_GESTURE)
        phone = context.new_page()
        phone.set_default_timeout(20_000)
        phone.goto(f"{live_server.url}/consults/{consult.ref}/room")
        phone.wait_for_function("() => window.playedWithoutGesture === true")
        phone.wait_for_function("() => { const v = document.getElementById('call-remote');"
                                " return !v.paused && v.readyState >= 2; }")
        button = phone.locator("#call-unmute")
        if blocked:
            expect(button).to_be_visible()
            assert phone.evaluate("() => document.getElementById('call-remote').muted") is True
            phone.screenshot(path=str(shots / "phone-sound-blocked.png"))
            button.click()
            expect(button).to_be_hidden()
            assert phone.evaluate("() => document.getElementById('call-remote').muted") is False
        else:
            phone.wait_for_timeout(1000)  # time for a refused play() to show the button (it must not)
            expect(button).to_be_hidden()
            assert phone.evaluate("() => document.getElementById('call-remote').muted") is False
        context.close()
    finally:
        own.close()


def _sign_in_without_gesture(context, base: str, email: str) -> None:
    """Sign a browser context in through the login form with plain requests: no user activation."""
    page = context.request.get(f"{base}/login").text()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    signed = context.request.post(f"{base}/login", max_redirects=0,
                                  form={"email": email, "password": PASSWORD, "csrf_token": token})
    assert signed.status == 302, signed.text()[:300]
