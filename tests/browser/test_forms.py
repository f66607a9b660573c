"""The request form keeps what a doctor typed, in headless Chromium (issue 10, "Losing what a doctor typed").

Attaching uploads without leaving the page (the typed History and Question stay), several files at
once each with its own progress, a file over the limit is refused before anything is sent, and
leaving with unsaved changes asks first (a "beforeunload" dialog) but not after saving.
Screenshots: test-artifacts/forms-*.png.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import collecting_errors
from tests.conftest import png_bytes, sign_in_page

pytestmark = pytest.mark.browser

HISTORY = "Fever for ten days, rigors at night; returned from a rice harvest."
QUESTION = "Leptospirosis or scrub typhus: which test first, and treat empirically now?"


@pytest.fixture
def editing(browser, live_server, make):
    """A rural doctor's page on the Edit request form of a draft, watched for page errors."""
    doctor = make.rural()
    draft = make.draft(doctor, history="", question="")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    page = collecting_errors(context.new_page())
    sign_in_page(page, live_server.url, doctor.email)
    page.goto(f"{live_server.url}/consults/{draft.ref}/edit")
    expect(page.get_by_role("heading", name="Edit consult request")).to_be_visible()
    yield page, draft
    context.close()


def type_case(page: Page) -> None:
    """Type as a doctor does (real key presses: the page has had a user gesture)."""
    page.get_by_label("History").click()
    page.keyboard.type(HISTORY)
    page.get_by_label("Your question for the specialist").click()
    page.keyboard.type(QUESTION)


def upload_requests(page: Page) -> list[str]:
    sent: list[str] = []
    page.on("request", lambda r: r.method == "POST" and urlsplit(r.url).path.endswith("/attachments")
            and sent.append(r.url))
    return sent


def test_attach_keeps_the_typed_text_and_shows_the_attachment(editing, shots):
    page, _ = editing
    type_case(page)
    page.evaluate("window.notReloaded = true")
    page.get_by_label("File").set_input_files([
        {"name": "ecg.png", "mimeType": "image/png", "buffer": png_bytes((320, 200), "white")}])
    page.get_by_label("What it shows").fill("ECG, lead II")
    page.get_by_role("button", name="Attach file").click()

    expect(page.locator(".flash.success")).to_have_text("File attached.")
    thumb = page.locator(".thumbs .thumb")
    expect(thumb).to_have_count(1)
    expect(thumb.locator("img")).to_have_attribute("alt", "ECG, lead II")
    expect(thumb).to_contain_text("320×200")
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete && i.naturalWidth)")
    expect(page.locator(".upload-row .upload-name")).to_have_text(["ecg.png"])
    expect(page.locator(".upload-row .upload-status")).to_have_text(["Attached"])
    assert page.evaluate("window.notReloaded") is True, "the page did not reload"
    expect(page.get_by_label("History")).to_have_value(HISTORY)
    expect(page.get_by_label("Your question for the specialist")).to_have_value(QUESTION)
    page.screenshot(path=str(shots / "forms-attach-keeps-text.png"), full_page=True)
    assert page.errors == []


def test_several_files_at_once_each_with_its_progress(editing, shots):
    page, _ = editing
    type_case(page)
    seen: list[str] = []
    page.expose_function("sawStatus", lambda text: seen.append(text))
    page.evaluate("""() => new MutationObserver(() => {
        document.querySelectorAll('.upload-row').forEach(row => {
            const bar = row.querySelector('progress');
            window.sawStatus(row.querySelector('.upload-name').textContent + '|' +
                             row.querySelector('.upload-status').textContent + '|' + (bar ? bar.value : ''));
        });
    }).observe(document.querySelector('.upload-queue'), {subtree: true, childList: true, characterData: true,
                                                        attributes: true})""")
    # A slow rural line: ~64 KB/s up, so each ~110 KB photo takes a couple of seconds.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 50,
                                                   "downloadThroughput": 1_000_000, "uploadThroughput": 64 * 1024})
    names = ["xray-pa.png", "xray-lateral.png", "lab-report.png"]
    page.get_by_label("File").set_input_files([
        {"name": n, "mimeType": "image/png", "buffer": png_bytes((210, 180), noise=True)} for n in names])
    page.get_by_role("button", name="Attach file").click()

    rows = page.locator(".upload-row")
    expect(rows).to_have_count(3)
    expect(rows.locator(".upload-name")).to_have_text(names)
    expect(rows.locator("progress")).to_have_count(3)
    page.screenshot(path=str(shots / "forms-several-uploading.png"), full_page=True)
    expect(rows.locator(".upload-status")).to_have_text(["Attached"] * 3, timeout=90_000)
    expect(page.locator(".flash.success")).to_have_text("3 files attached.")
    expect(page.locator(".thumbs .thumb")).to_have_count(3)
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                   "downloadThroughput": -1, "uploadThroughput": -1})
    for name in names:
        statuses = [s.split("|") for s in seen if s.startswith(name + "|")]
        partial = [int(v) for _, status, v in statuses if status.startswith("Uploading ") and 0 < int(v) < 100]
        assert partial, f"no progress shown between 0 and 100% for {name}: {statuses}"
    expect(page.get_by_label("History")).to_have_value(HISTORY)
    page.screenshot(path=str(shots / "forms-several-attached.png"), full_page=True)
    assert page.errors == []


def test_a_file_over_the_limit_is_refused_before_it_is_sent(editing, shots):
    page, _ = editing
    type_case(page)
    sent = upload_requests(page)
    big = b"\x89PNG\r\n\x1a\n" + bytes(22 * 1024 * 1024 - 8)
    page.get_by_label("File").set_input_files([
        {"name": "ECG.png", "mimeType": "image/png", "buffer": big},
        {"name": "notes.docx", "mimeType": "application/octet-stream", "buffer": b"PK\x03\x04"}])
    page.get_by_role("button", name="Attach file").click()

    rows = page.locator(".upload-row")
    expect(rows.locator(".upload-status")).to_have_text([
        "ECG.png is 22 MB; the limit is 15 MB.",
        "notes.docx is not a JPEG, PNG or PDF file; only those can be attached."])
    error = page.locator("#upload-error")
    expect(error).to_have_text("None of the chosen files can be attached; see each file below.")
    expect(page.get_by_label("File")).to_have_attribute("aria-describedby", "upload-help upload-error")
    page.wait_for_timeout(500)
    assert sent == [], "nothing was uploaded"
    expect(page.locator(".thumbs .thumb")).to_have_count(0)
    expect(page.get_by_label("History")).to_have_value(HISTORY)
    page.screenshot(path=str(shots / "forms-over-limit.png"), full_page=True)
    assert page.errors == []


def test_leaving_with_unsaved_changes_asks_first_but_not_after_saving(editing, live_server, shots):
    page, draft = editing
    dialogs: list[str] = []

    def on_dialog(dialog) -> None:
        dialogs.append(dialog.type)
        dialog.dismiss()  # "Stay on page"

    page.on("dialog", on_dialog)
    # Nothing typed yet: leaving does not ask.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", name="My consult requests")).to_be_visible()
    assert dialogs == []

    page.goto(f"{live_server.url}/consults/{draft.ref}/edit")
    type_case(page)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard").click()
    page.wait_for_timeout(1000)
    assert dialogs == ["beforeunload"]
    assert urlsplit(page.url).path == f"/consults/{draft.ref}/edit", "the doctor stayed on the form"
    expect(page.get_by_label("History")).to_have_value(HISTORY)

    page.get_by_role("button", name="Save draft").click()
    expect(page.locator(".flash.success")).to_have_text("Saved.")
    assert dialogs == ["beforeunload"], "submitting the form is not leaving it"
    expect(page.get_by_label("History")).to_have_value(HISTORY)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", name="My consult requests")).to_be_visible()
    assert dialogs == ["beforeunload"], "saved: leaving does not ask"
    assert page.errors == []


def test_the_recommendation_form_asks_before_losing_unsaved_text(browser, live_server, make):
    doctor, specialist = make.rural(), make.specialist(specialty="cardiology")
    consult = make.accepted(doctor, specialist)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog) -> None:
        dialogs.append(dialog.type)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        sign_in_page(page, live_server.url, specialist.email)
        page.goto(f"{live_server.url}/consults/{consult.ref}/answer")
        page.get_by_label("Assessment").click()
        page.keyboard.type("Stable angina, low risk.")
        page.get_by_role("link", name="Back to the case").click()
        page.wait_for_timeout(1000)
        assert dialogs == ["beforeunload"]
        expect(page.get_by_label("Assessment")).to_have_value("Stable angina, low risk.")
        page.get_by_role("button", name="Save draft").click()
        expect(page.locator(".flash.success")).to_have_text("Draft saved.")
        page.get_by_role("link", name="Back to the case").click()
        expect(page).to_have_url(f"{live_server.url}/consults/{consult.ref}")
        assert dialogs == ["beforeunload"]
    finally:
        context.close()
