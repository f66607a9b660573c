"""The call adapts by itself: static/js/adapt.js fed synthetic getStats samples in Chromium, and two
doctors' calls on loopback where the configured thresholds make the link count as weak."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.test_call import _two_doctors, _wait_remote_video, frames_advance

pytestmark = pytest.mark.browser

ADAPT_JS = Path(__file__).resolve().parents[2] / "static" / "js" / "adapt.js"

# Feed a controller a sequence: [[seconds, {sample}], ...] → the automatic switches and the mode
# after every sample. Each sample's t is the sequence's second.
RUN = """([settings, seq, forced]) => {
  const c = new HuizhenAdapt.Controller(settings);
  const modes = [], switches = [];
  for (const [t, s] of seq) {
    if (forced && forced[t] !== undefined) c.force(forced[t]);
    if (s.silent) { c.interrupt(t); modes.push(c.mode()); continue; }  // nothing arrived this second
    const d = c.feed(Object.assign({t: t}, s));
    modes.push(d.mode);
    if (d.changed) switches.push([t, d.mode, d.reason]);
  }
  return {modes, switches, history: c.history};
}"""

SETTINGS = {"min_kbps": 150, "max_loss_pct": 10, "max_rtt_ms": 1000, "max_jitter_ms": 100,
            "down_seconds": 4, "up_seconds": 15, "max_up_seconds": 120, "retry_window": 60, "quiet_seconds": 10}
SILENT = {"silent": True}
GOOD = {"kbps": 400, "loss_pct": 0.5, "rtt_ms": 150, "jitter_ms": 10}
LOSSY = {"kbps": 400, "loss_pct": 20, "rtt_ms": 150, "jitter_ms": 10}
THIN = {"kbps": 60, "loss_pct": 1, "rtt_ms": 300, "jitter_ms": 20}


def _seq(*parts: tuple[int, dict]) -> list:
    """[(seconds, sample), ...] → one sample a second, in order."""
    out, t = [], 0
    for seconds, sample in parts:
        for _ in range(seconds):
            out.append([t, sample])
            t += 1
    return out


@pytest.fixture(scope="module")
def adapt_page(browser):
    context = browser.new_context()
    page = context.new_page()
    page.set_content("<!doctype html><title>adapt</title>")
    page.add_script_tag(path=str(ADAPT_JS))  # the real file the room loads
    yield page
    context.close()


def _run(page, seq, settings=None, forced=None) -> dict:
    return page.evaluate(RUN, [settings or SETTINGS, seq, forced or {}])


def test_a_short_dip_keeps_video(adapt_page):
    for dip in (LOSSY, THIN, {**GOOD, "rtt_ms": 1500}, {**GOOD, "jitter_ms": 300}):
        out = _run(adapt_page, _seq((20, GOOD), (3, dip), (20, GOOD), (2, dip), (1, GOOD), (3, dip), (20, GOOD)))
        assert out["switches"] == [] and set(out["modes"]) == {"video"}
    # Loss going up and down every other second never holds for 4 s: video stays.
    out = _run(adapt_page, _seq(*[(1, LOSSY if i % 2 else GOOD) for i in range(120)]))
    assert out["switches"] == []


def test_a_drop_and_the_climb_back_after_it_keep_video(adapt_page):
    """A link that is down sends nothing (not a weak link: the ICE restart deals with it); after it
    returns, the bandwidth estimate climbs back for a few seconds: neither switches to audio."""
    out = _run(adapt_page, _seq((10, GOOD), (2, LOSSY), (15, SILENT), (8, THIN), (30, GOOD)))
    assert out["switches"] == [] and set(out["modes"]) == {"video"}
    # A weak run broken by a drop starts again from nothing.
    out = _run(adapt_page, _seq((10, GOOD), (3, LOSSY), (1, SILENT), (9, GOOD), (3, LOSSY), (20, GOOD)))
    assert out["switches"] == []
    # After the quiet seconds, a link that stays weak is judged as before.
    out = _run(adapt_page, _seq((10, GOOD), (5, SILENT), (30, LOSSY)))
    assert out["switches"] == [[28, "audio", "weak"]]  # quiet until 14 + 10 = 24, weak from 24, 4 s later


def test_sustained_loss_or_thin_bandwidth_switches_to_audio_after_the_configured_seconds(adapt_page):
    for weak in (LOSSY, THIN, {**GOOD, "rtt_ms": 1200}):
        out = _run(adapt_page, _seq((10, GOOD), (10, weak)))
        assert out["switches"] == [[14, "audio", "weak"]]  # weak from t=10, 4 s later
        assert out["modes"][13] == "video" and out["modes"][14:] == ["audio"] * 6
    # Figures the browser did not report (null) are not judged.
    out = _run(adapt_page, _seq((30, {"kbps": None, "loss_pct": None, "rtt_ms": None, "jitter_ms": None})))
    assert out["switches"] == []


def test_video_comes_back_only_after_a_sustained_recovery(adapt_page):
    # Weak for 6 s (audio at t=4), then good: video at 4 + ... the first good sample at t=6 starts
    # the run, 15 s later (t=21) video is back.
    out = _run(adapt_page, _seq((6, LOSSY), (30, GOOD)))
    assert out["switches"] == [[4, "audio", "weak"], [21, "video", "recovered"]]
    # A bad second during the recovery starts it again.
    out = _run(adapt_page, _seq((6, LOSSY), (10, GOOD), (1, LOSSY), (30, GOOD)))
    assert out["switches"] == [[4, "audio", "weak"], [32, "video", "recovered"]]
    # Recovery needs a clearly better link than the switch: 7 % loss is not weak, but not good
    # enough to try video again either (half of 10 %).
    out = _run(adapt_page, _seq((6, LOSSY), (60, {**GOOD, "loss_pct": 7})))
    assert out["switches"] == [[4, "audio", "weak"]]
    # On audio the bitrate estimate is not judged (audio alone does not probe the link).
    # (Back on video the thin estimate is judged again: it falls back, and waits twice as long.)
    out = _run(adapt_page, _seq((6, THIN), (55, THIN)))
    assert out["switches"] == [[4, "audio", "weak"], [20, "video", "recovered"], [25, "audio", "weak"],
                               [56, "video", "recovered"]]


def test_a_link_that_keeps_failing_does_not_flap(adapt_page):
    # A link that holds for 16 s and then fails for 6 s, for ten minutes: each relapse soon after
    # video came back doubles the wait (15, 30, 60, 120 s), so the call switches a few times.
    cycle = [(16, GOOD), (6, LOSSY)]
    out = _run(adapt_page, _seq(*(cycle * 28)))
    recoveries = [s[0] for s in out["switches"] if s[1] == "video"]
    assert len(out["switches"]) <= 8, out["switches"]
    assert len(recoveries) <= 4
    gaps = [b - a for a, b in itertools.pairwise(recoveries)]
    assert gaps == sorted(gaps)  # ever longer between tries
    # Never two switches within down_seconds of each other.
    times = [s[0] for s in out["switches"]]
    assert all(b - a >= 4 for a, b in itertools.pairwise(times))
    # After a relapse long after a recovery, the wait is back to the configured 15 s.
    out = _run(adapt_page, _seq((6, LOSSY), (16, GOOD), (6, LOSSY), (16, GOOD), (100, GOOD), (6, LOSSY), (20, GOOD)))
    assert [s[:2] for s in out["switches"]] == [[4, "audio"], [21, "video"], [26, "audio"], [58, "video"],
                                                [148, "audio"], [165, "video"]]


def test_a_forced_choice_wins_over_the_link(adapt_page):
    seq = _seq((10, GOOD), (60, LOSSY), (30, GOOD))
    # Forced video at t=5: a minute of loss keeps video.
    out = _run(adapt_page, seq, forced={5: "video"})
    assert set(out["modes"]) == {"video"} and out["switches"] == []
    # Forced audio on a good link stays audio; handing back to the link (null) follows it again.
    out = _run(adapt_page, _seq((40, GOOD)), forced={2: "audio"})
    assert out["modes"][:2] == ["video", "video"] and set(out["modes"][2:]) == {"audio"}
    out = _run(adapt_page, seq, forced={2: "audio", 8: None})
    assert out["modes"][8] == "video" and out["switches"][-2:] == [[14, "audio", "weak"], [85, "video", "recovered"]]
    # Forcing video while the link had chosen audio turns video on at once.
    out = _run(adapt_page, _seq((10, LOSSY), (10, LOSSY)), forced={12: "video"})
    assert out["modes"][11] == "audio" and set(out["modes"][12:]) == {"video"}


def test_the_ice_restarter_restarts_at_once_on_failed_after_a_grace_on_disconnected_and_while_down(adapt_page):
    out = adapt_page.evaluate("""() => {
      const r = new HuizhenAdapt.Restarter({grace_seconds: 3, retry_seconds: 5, max_retry_seconds: 20});
      const at = [];
      const ev = {2: "connected", 10: "disconnected", 11: "connected", 20: "disconnected", 24: "checking",
                  40: "failed", 90: "connected", 100: "failed", 100.5: "checking", 100.6: "failed"};
      for (let t = 0; t <= 120; t += 0.5) {
        if (ev[t] !== undefined && r.change(ev[t], t)) at.push(["change", t]);
        if (r.tick(t)) at.push(["tick", t]);
      }
      return at;
    }""")
    # A 1 s blip (10→11) restarts nothing; down from 20: 23, then 28, 38 (5, 10 s), failed at 40
    # restarts at once, then every 20 s at most; connected at 90 resets; failed at 100 at once,
    # failed again 0.6 s later waits for the timer (105).
    assert out == [["tick", 23], ["tick", 28], ["tick", 38], ["change", 40], ["tick", 60], ["tick", 80],
                   ["change", 100], ["tick", 105], ["tick", 115]]


# --- two browsers on loopback ---------------------------------------------------------------------

VIDEO_SENT = """async () => {
  let n = 0;
  (await window.huizhenCall.pc().getStats()).forEach(r => {
    if (r.type === 'outbound-rtp' && r.kind === 'video') n += r.bytesSent || 0;
  });
  return n;
}"""
AUDIO_RECEIVED = """async () => {
  let n = 0;
  (await window.huizhenCall.pc().getStats()).forEach(r => {
    if (r.type === 'inbound-rtp' && r.kind === 'audio') n += r.packetsReceived || 0;
  });
  return n;
}"""
VIDEO_CAPS = """() => {
  const s = window.huizhenCall.pc().getSenders().find(x => x.track && x.track.kind === 'video');
  const p = s.getParameters();
  return {enc: p.encodings[0], degradation: p.degradationPreference || null};
}"""
OPUS_FMTP = """() => {
  const sdp = window.huizhenCall.pc().remoteDescription.sdp;
  const pt = /a=rtpmap:(\\d+) opus\\/48000/i.exec(sdp)[1];
  return new RegExp('a=fmtp:' + pt + ' (.*)').exec(sdp)[1];
}"""
UFRAG = "() => /a=ice-ufrag:(\\S+)/.exec(window.huizhenCall.pc().localDescription.sdp)[1]"


def _grows(page, script: str, seconds: float = 2.0) -> int:
    before = page.evaluate(script)
    page.wait_for_timeout(seconds * 1000)
    return page.evaluate(script) - before


def _frames_advance(page, timeout_ms: int = 15000) -> None:
    frames_advance(page, 5, timeout_ms)


def _join(call) -> None:
    call.rural_page.goto(call.room)
    call.spec_page.goto(call.room)
    call.rural_page.click("#call-join")
    # One after the other, as test_call does: two joins at the same instant can open two call
    # records (start_call reads, then inserts) — not what these tests are about.
    expect(call.rural_page.locator("#call-status")).to_contain_text("Waiting for the other doctor")
    call.spec_page.click("#call-join")
    for page in (call.rural_page, call.spec_page):
        _wait_remote_video(page)


def test_video_is_capped_opus_has_fec_and_dtx_each_side_sees_what_the_other_receives_and_ice_restarts(
        app, live_server, browser, shots):
    with _two_doctors(browser, live_server) as call:
        _join(call)
        for page in (call.rural_page, call.spec_page):
            caps = page.evaluate(VIDEO_CAPS)
            assert caps["enc"]["maxBitrate"] == 350_000 and caps["enc"]["scaleResolutionDownBy"] == 1
            assert caps["enc"]["maxFramerate"] == 20
            assert caps["degradation"] == "balanced"
            params = dict(p.split("=", 1) for p in page.evaluate(OPUS_FMTP).split(";"))
            assert params.get("useinbandfec") == "1" and params.get("usedtx") == "1"
            # The other side's report of what it receives from us: the camera's 480 lines, capped.
            receives = re.compile(r"They receive: video \d+p · ~\d+ kbit/s")
            expect(page.locator("#call-their-view")).to_contain_text(receives, timeout=15000)
            text = page.locator("#call-their-view").inner_text()
            kbps = int(re.search(r"~(\d+) kbit/s", text).group(1))
            assert 0 < kbps <= 350 * 1.3, text
        call.rural_page.screenshot(path=str(shots / "call-adapt-00-they-receive.png"), full_page=True)

        # ICE restart through the signaling, one side and then both at once (polite/impolite roles
        # settle the crossing offers): new credentials on both sides, the same call, video goes on.
        from sqlalchemy import func, select

        from webapp.extensions import db
        from webapp.models import CallSession

        for starters in ((call.rural_page,), (call.spec_page,), (call.rural_page, call.spec_page)):
            before = {id(p): p.evaluate(UFRAG) for p in (call.rural_page, call.spec_page)}
            for page in starters:
                page.evaluate("() => window.huizhenCall.restartIce()")
            for page in (call.rural_page, call.spec_page):
                page.wait_for_function(f"() => ({UFRAG})() !== {before[id(page)]!r} && "
                                       "window.huizhenCall.pc().signalingState === 'stable' && "
                                       "window.huizhenCall.pc().iceConnectionState === 'connected'", timeout=15000)
                _frames_advance(page)
        db.session.rollback()
        assert db.session.scalar(select(func.count()).select_from(CallSession)
                                 .where(CallSession.consult_id == call.consult.id)) == 1


def test_a_weak_link_switches_both_sides_to_audio_with_words_and_video_returns_when_it_recovers(
        app, live_server, browser, shots, monkeypatch):
    # Loopback's bitrate estimate is far under 100 Gbit/s: the link counts as weak from the start.
    # Recovery is out of reach (an hour) until the test lets the link "recover" through the page's
    # controller (window.huizhenCall.adapt, the same object call.js feeds every second).
    monkeypatch.setitem(app.config, "CALL_ADAPT_MIN_KBPS", 100_000_000)
    monkeypatch.setitem(app.config, "CALL_ADAPT_DOWN_SECONDS", 2)
    monkeypatch.setitem(app.config, "CALL_ADAPT_UP_SECONDS", 3600)
    with _two_doctors(browser, live_server) as call:
        rural, spec = call.rural_page, call.spec_page
        _join(call)
        for page in (rural, spec):
            expect(page.locator("#call-status")).to_have_text("Weak connection — switched to audio only", timeout=15000)
            expect(page.locator("#call-peer-state")).to_contain_text("audio only (weak connection)")
            expect(page.locator("#call-audio-only")).to_have_text("Turn video back on")
            expect(page.locator("#call-their-view")).to_contain_text("They receive: audio only", timeout=15000)
        for page in (rural, spec):  # video out stops, audio keeps arriving
            assert _grows(page, VIDEO_SENT) == 0
            assert _grows(page, AUDIO_RECEIVED) > 20
            assert page.evaluate("() => window.huizhenCall.state.audio_only && window.huizhenCall.state.auto_audio")
        rural.screenshot(path=str(shots / "call-adapt-01-audio-only.png"), full_page=True)

        # The rural doctor forces video: it wins over the weak link (no switch back for longer
        # than the 2 s the link needs); the specialist's side stays on audio.
        rural.click("#call-audio-only")
        expect(rural.locator("#call-audio-only")).to_have_text("Audio only")
        _frames_advance(spec)
        rural.wait_for_timeout(4000)
        assert rural.evaluate("() => !window.huizhenCall.state.audio_only"
                              " && window.huizhenCall.adapt.mode() === 'video'")
        assert _grows(rural, VIDEO_SENT) > 0
        expect(spec.locator("#call-peer-state")).not_to_contain_text("audio only")
        assert _grows(spec, VIDEO_SENT) == 0

        # The specialist's link recovers: video back on, said on both sides.
        spec.evaluate("() => window.huizhenCall.adapt.configure({min_kbps: 0, up_seconds: 2})")
        expect(spec.locator("#call-status")).to_have_text("Connection recovered — video back on", timeout=15000)
        expect(rural.locator("#call-status")).to_have_text("The other doctor's video is back on")
        expect(rural.locator("#call-peer-state")).not_to_contain_text("audio only")
        _frames_advance(rural)
        assert _grows(spec, VIDEO_SENT) > 0
        expect(rural.locator("#call-their-view")).to_contain_text("They receive: video", timeout=15000)
        spec.screenshot(path=str(shots / "call-adapt-02-video-back.png"), full_page=True)


def test_the_audio_only_words_fit_a_phone(app, live_server, browser, shots, monkeypatch):
    monkeypatch.setitem(app.config, "CALL_ADAPT_MIN_KBPS", 100_000_000)
    monkeypatch.setitem(app.config, "CALL_ADAPT_DOWN_SECONDS", 2)
    with _two_doctors(browser, live_server) as call:
        call.rural_page.set_viewport_size({"width": 360, "height": 740})
        _join(call)
        status = call.rural_page.locator("#call-status")
        expect(status).to_have_text("Weak connection — switched to audio only", timeout=15000)
        expect(call.rural_page.locator("#call-peer-state")).to_contain_text("audio only (weak connection)")
        expect(call.rural_page.locator("#call-their-view")).to_contain_text("They receive", timeout=15000)
        for selector in ("#call-status", "#call-peer-state", "#call-their-view"):
            box = call.rural_page.locator(selector).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 360, (selector, box)
        assert call.rural_page.evaluate("() => document.documentElement.scrollWidth") <= 360
        call.rural_page.screenshot(path=str(shots / "call-adapt-03-phone.png"), full_page=True)


def test_video_comes_back_on_a_connection_that_was_built_while_on_audio_only(
        app, live_server, browser, monkeypatch):
    """The specialist reloads while the rural doctor is on audio only: the rural doctor's new
    connection has a receive-only video transceiver; when the link recovers, video must be sent
    again (direction back to send, a renegotiation) in the same stream as the sound."""
    monkeypatch.setitem(app.config, "CALL_ADAPT_MIN_KBPS", 100_000_000)
    monkeypatch.setitem(app.config, "CALL_ADAPT_DOWN_SECONDS", 2)
    monkeypatch.setitem(app.config, "CALL_ADAPT_UP_SECONDS", 3600)
    with _two_doctors(browser, live_server) as call:
        rural, spec = call.rural_page, call.spec_page
        _join(call)
        expect(rural.locator("#call-status")).to_have_text("Weak connection — switched to audio only", timeout=15000)
        spec.reload()  # the call comes back by itself (sessionStorage)
        spec.wait_for_function("() => window.huizhenCall.pc()"
                               " && window.huizhenCall.pc().connectionState === 'connected'", timeout=20000)
        expect(spec.locator("#call-status")).to_have_text("Weak connection — switched to audio only", timeout=15000)
        assert rural.evaluate("""() => window.huizhenCall.pc().getTransceivers()
          .filter(t => t.receiver.track.kind === 'video').map(t => t.direction)""") == ["recvonly"]
        rural.evaluate("() => window.huizhenCall.adapt.configure({min_kbps: 0, up_seconds: 2})")
        expect(rural.locator("#call-status")).to_have_text("Connection recovered — video back on", timeout=15000)
        _frames_advance(spec)
        spec.wait_for_function("""() => { const s = document.getElementById('call-remote').srcObject;
          return s && s.getVideoTracks().length === 1 && s.getAudioTracks().length === 1; }""", timeout=10000)
        # One audio and one video transceiver on each side: the answering connection built while on
        # audio only used the offer's video, it did not add one that nothing would match.
        for page in (rural, spec):
            assert page.evaluate("() => window.huizhenCall.pc().getTransceivers().map(t => t.receiver.track.kind)") \
                == ["audio", "video"]
        assert _grows(spec, AUDIO_RECEIVED) > 20
