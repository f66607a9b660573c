"""The video call in headless Chromium with fake camera and microphone: two doctors see each other."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD, Factory

pytestmark = pytest.mark.browser

REMOTE_PLAYING = """() => {
  const v = document.getElementById('call-remote');
  if (!v || !v.srcObject || v.readyState < 2 || v.videoWidth === 0) return null;
  const c = document.createElement('canvas');
  c.width = 64; c.height = 48;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0, 64, 48);
  const px = g.getImageData(0, 0, 64, 48).data;
  let lit = 0;
  for (let i = 0; i < px.length; i += 4) if (px[i] + px[i + 1] + px[i + 2] > 60) lit++;
  return {time: v.currentTime, lit: lit, w: v.videoWidth};
}"""


def _signed_in(browser, base: str, email: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{base}/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("main button[type=submit]")  # not the header's language switch
    page.wait_for_url(lambda url: "/login" not in url)
    return context, page


def _wait_remote_video(page, timeout_ms: int = 20000) -> dict:
    page.wait_for_function(f"() => {{ const r = ({REMOTE_PLAYING})(); return r && r.lit > 100; }}",
                           timeout=timeout_ms)
    first = page.evaluate(REMOTE_PLAYING)
    page.wait_for_function(f"() => {{ const r = ({REMOTE_PLAYING})(); return r && r.time > {first['time']} + 0.3; }}",
                           timeout=timeout_ms)
    return page.evaluate(REMOTE_PLAYING)


@contextmanager
def _two_doctors(browser, live_server) -> Iterator[SimpleNamespace]:
    """A booked consult, its room's address, and its two doctors signed in, each in a browser context."""
    make = Factory()
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    ctx_r, rural_page = _signed_in(browser, live_server.url, rural.email)
    ctx_s, spec_page = _signed_in(browser, live_server.url, specialist.email)
    try:
        yield SimpleNamespace(consult=consult, rural=rural, room=f"{live_server.url}/consults/{consult.ref}/room",
                              rural_page=rural_page, spec_page=spec_page)
    finally:
        ctx_r.close()
        ctx_s.close()


def test_two_doctors_see_each_other_mute_hang_up_rejoin_and_reload(app, live_server, browser, shots):
    with _two_doctors(browser, live_server) as call:
        room, rural_page, spec_page = call.room, call.rural_page, call.spec_page
        rural_page.goto(room)
        rural_page.screenshot(path=str(shots / "call-00-room.png"), full_page=True)
        spec_page.goto(room)
        rural_page.click("#call-join")
        expect(rural_page.locator("#call-status")).to_contain_text("Waiting for the other doctor", timeout=20_000)
        spec_page.click("#call-join")

        for page in (rural_page, spec_page):  # each sees the other's camera, frames advancing
            _wait_remote_video(page)
            expect(page.locator("#call-status")).to_have_text("Connected")
        rural_page.screenshot(path=str(shots / "call-01-connected-rural.png"), full_page=True)
        spec_page.screenshot(path=str(shots / "call-02-connected-specialist.png"), full_page=True)

        rural_page.click("#call-mute")  # mute shows on the other side
        expect(spec_page.locator("#call-peer-state")).to_contain_text("muted")
        rural_page.click("#call-mute")
        expect(spec_page.locator("#call-peer-state")).not_to_contain_text("muted")

        spec_page.click("#call-leave")  # hang up ...
        expect(spec_page.locator("#call-status")).to_contain_text("You left the call")
        expect(rural_page.locator("#call-status")).to_contain_text("left the call")
        spec_page.click("#call-join")   # ... and rejoin
        _wait_remote_video(rural_page)
        _wait_remote_video(spec_page)

        rural_page.reload()             # a reload re-establishes the call by itself
        _wait_remote_video(rural_page)
        _wait_remote_video(spec_page)
        expect(spec_page.locator("#call-status")).to_have_text("Connected")
        spec_page.screenshot(path=str(shots / "call-03-after-reload.png"), full_page=True)


def test_call_forced_through_the_turn_relay_connects(app, live_server, browser, coturn):
    app.config.update(TURN_URLS=[coturn.url], TURN_SECRET=coturn.secret, STUN_URLS=[], FORCE_TURN_RELAY=True)
    try:
        with _two_doctors(browser, live_server) as call:
            rural_page, spec_page, consult = call.rural_page, call.spec_page, call.consult
            rural_page.goto(call.room)
            spec_page.goto(call.room)
            rural_page.click("#call-join")
            spec_page.click("#call-join")
            for page in (rural_page, spec_page):
                _wait_remote_video(page)
                page.wait_for_function("() => window.huizhenCall.metrics.relayed === true", timeout=15000)
            expect(rural_page.locator("#call-quality")).to_contain_text("via relay")
        from sqlalchemy import select

        from webapp.extensions import db
        from webapp.models import CallSession

        db.session.rollback()  # end the test's read snapshot: see what the server committed
        call = db.session.scalar(select(CallSession).where(CallSession.consult_id == consult.id))
        assert call.relayed is True and call.setup_ms is not None and call.setup_ms > 0
    finally:
        app.config.update(TURN_URLS=[], TURN_SECRET="", FORCE_TURN_RELAY=False)


def test_a_join_clicked_while_the_signaling_socket_is_down_is_sent_once_when_it_is_back(app, live_server, browser):
    from sqlalchemy import select

    from webapp.extensions import db
    from webapp.models import AuditEvent

    with _two_doctors(browser, live_server) as call:
        room, rural_page, spec_page = call.room, call.rural_page, call.spec_page
        consult, rural = call.consult, call.rural
        spec_page.goto(room)
        spec_page.click("#call-join")
        expect(spec_page.locator("#call-status")).to_contain_text("Waiting for the other doctor", timeout=20_000)
        rural_page.goto(room)
        rural_page.wait_for_function("() => window.huizhenCall.socket.connected")
        rural_page.evaluate("() => window.huizhenCall.socket.disconnect()")
        rural_page.click("#call-join")  # the camera starts; the join waits for the socket
        rural_page.wait_for_timeout(300)
        rural_page.evaluate("() => window.huizhenCall.socket.connect()")
        for page in (rural_page, spec_page):
            _wait_remote_video(page)
            expect(page.locator("#call-status")).to_have_text("Connected")
        db.session.rollback()
        joins = db.session.scalars(select(AuditEvent).where(
            AuditEvent.consult_id == consult.id, AuditEvent.action == "call.joined",
            AuditEvent.actor_id == rural.id)).all()
        assert len(joins) == 1, [j.created_at for j in joins]


FRAMES_DECODED = """async () => {
  const pc = window.huizhenCall.pc();
  if (!pc) return 0;
  let n = 0;
  (await pc.getStats()).forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'video') n = r.framesDecoded || 0; });
  return n;
}"""
# The remote picture's shape (width / height): the fake camera and the fake screen differ in shape,
# and the shape survives WebRTC scaling the resolution down when the machine is busy (widths do not).
REMOTE_SHAPE = ("() => { const v = document.getElementById('call-remote');"
                " return v.videoHeight ? v.videoWidth / v.videoHeight : 0; }")


def _shape_is(shape: float) -> str:
    return f"() => Math.abs(({REMOTE_SHAPE})() - {shape}) < 0.05"


def _frames_advance_from(page, shape: float, timeout_ms: int) -> None:
    """The remote video has the camera's shape again and new frames are decoded, within timeout_ms."""
    page.wait_for_function(_shape_is(shape), timeout=timeout_ms)
    frames_advance(page, 5, timeout_ms)


def frames_advance(page, by: int, timeout_ms: int) -> None:
    """The remote video decodes `by` new frames within timeout_ms.

    Polled from here: wait_for_function takes an async predicate's promise as a truthy answer at
    once, so it cannot wait on getStats."""
    base = page.evaluate(FRAMES_DECODED)
    deadline = time.monotonic() + timeout_ms / 1000
    while (now := page.evaluate(FRAMES_DECODED)) < base + by:
        assert time.monotonic() < deadline, f"remote frames stuck at {now} (from {base}) for {timeout_ms} ms"
        time.sleep(0.1)


def test_stop_sharing_returns_the_other_side_to_the_camera(app, live_server, browser, shots):
    """The button (track.stop() fires no 'ended') and the browser's own bar ('ended') both go back to
    the camera: the other doctor's video carries camera frames again within 3 s."""
    with _two_doctors(browser, live_server) as call:
        rural_page, spec_page = call.rural_page, call.spec_page
        rural_page.goto(call.room)
        spec_page.goto(call.room)
        rural_page.click("#call-join")
        spec_page.click("#call-join")
        for page in (rural_page, spec_page):
            _wait_remote_video(page)
        camera = spec_page.evaluate(REMOTE_SHAPE)
        rural_page.wait_for_function(_shape_is(camera))  # the same fake camera on both sides

        # The rural doctor shares the (fake, 1280 px wide) screen, then stops with the button.
        rural_page.click("#call-screen")
        expect(rural_page.locator("#call-screen")).to_have_text("Stop sharing")
        expect(spec_page.locator("#call-peer-state")).to_contain_text("sharing screen")
        spec_page.wait_for_function(f"() => !({_shape_is(camera)})()", timeout=20000)
        spec_page.screenshot(path=str(shots / "call-10-sharing.png"), full_page=True)
        rural_page.click("#call-screen")
        _frames_advance_from(spec_page, camera, 3000)
        expect(rural_page.locator("#call-screen")).to_have_text("Share screen")
        expect(spec_page.locator("#call-peer-state")).not_to_contain_text("sharing screen")
        spec_page.screenshot(path=str(shots / "call-11-after-stop-button.png"), full_page=True)

        # The specialist shares, then the browser's own "Stop sharing" bar ends the capture ('ended').
        spec_page.click("#call-screen")
        rural_page.wait_for_function(f"() => !({_shape_is(camera)})()", timeout=20000)
        spec_page.evaluate("""() => {
          const s = window.huizhenCall.pc().getSenders().find(x => x.track && x.track.kind === 'video');
          s.track.dispatchEvent(new Event('ended'));
        }""")
        _frames_advance_from(rural_page, camera, 3000)
        expect(spec_page.locator("#call-screen")).to_have_text("Share screen")
        _wait_remote_video(rural_page)
        rural_page.screenshot(path=str(shots / "call-12-after-browser-bar.png"), full_page=True)
