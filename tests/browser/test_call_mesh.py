"""The call with more than two in headless Chromium (fake camera and microphone): three doctors in a
full mesh each see the two others; a trainee watches receive-only, raises a hand and is let speak."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import signed_in
from tests.conftest import Factory

pytestmark = pytest.mark.browser

# Frames decoded per remote person (user id -> framesDecoded), over every peer connection.
FRAMES_BY_PEER = """async () => {
  const pcs = window.huizhenCall.pcs(), out = {};
  for (const [id, pc] of Object.entries(pcs)) {
    let n = 0;
    (await pc.getStats()).forEach(r => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0;
    });
    out[id] = n;
  }
  return out;
}"""
# What this page sends, over every peer connection: packets sent per kind.
SENT = """async () => {
  const out = {audio: 0, video: 0};
  for (const pc of Object.values(window.huizhenCall.pcs())) {
    (await pc.getStats()).forEach(r => { if (r.type === 'outbound-rtp') out[r.kind] += r.packetsSent || 0; });
  }
  return out;
}"""
LIVE_TILES = ("() => Array.from(document.querySelectorAll('#call-remotes video'))"
              ".filter(v => v.srcObject && v.videoWidth > 0).length")
IN_CALL = "() => window.huizhenCall.socket.connected && document.getElementById('call').classList.contains('in-call')"


@contextmanager
def _team(browser, live_server, *, trainee_too: bool = False) -> Iterator[SimpleNamespace]:
    make = Factory()
    rural, lead = make.rural(), make.specialist()
    consult = make.scheduled(rural, lead)
    second = make.second_specialist(consult)
    trainee = make.trainee(consult) if trainee_too else None
    people = [("rural", rural, 1280), ("lead", lead, 1280), ("second", second, 390)]
    if trainee is not None:
        people.append(("trainee", trainee, 1280))
    contexts, pages = [], {}
    try:
        for key, user, width in people:
            ctx, page = signed_in(browser, live_server.url, user.email, width, 844 if width == 390 else 900)
            contexts.append(ctx)
            pages[key] = page
        yield SimpleNamespace(room=f"{live_server.url}/consults/{consult.ref}/room", pages=pages, rural=rural,
                              lead=lead, second=second, trainee=trainee)
    finally:
        for ctx in contexts:
            ctx.close()


def frames_advance_from_each(page, others: set[int], by: int, timeout_ms: int) -> None:
    """Every one of `others` is decoded on this page, `by` new frames each, within timeout_ms."""
    deadline = time.monotonic() + timeout_ms / 1000
    base = None
    while True:
        now = {int(k): v for k, v in page.evaluate(FRAMES_BY_PEER).items()}
        if set(now) >= others and base is None and all(now[o] > 0 for o in others):
            base = now
        if base is not None and all(now[o] >= base[o] + by for o in others):
            return
        assert time.monotonic() < deadline, f"frames {now} (from {base}) for {others} after {timeout_ms} ms"
        time.sleep(0.2)


def test_three_doctors_each_see_the_two_others_and_one_leaving_leaves_the_pair(app, live_server, browser, shots):
    with _team(browser, live_server) as team:
        p = team.pages
        ids = {"rural": team.rural.id, "lead": team.lead.id, "second": team.second.id}
        for page in p.values():
            page.goto(team.room, timeout=60000)
        for key in ("rural", "lead", "second"):
            p[key].click("#call-join")
            p[key].wait_for_function(IN_CALL)
        for key, page in p.items():  # each sees the two others, frames advancing
            frames_advance_from_each(page, {v for k, v in ids.items() if k != key}, 10, 90000)
            page.wait_for_function(f"() => ({LIVE_TILES})() === 2", timeout=30000)
            expect(page.locator("#call-status")).to_have_text("Connected", timeout=30000)
        expect(p["rural"].locator("#call-remotes .tile-name")).to_have_text(
            [f"{team.lead.full_name} · Lead specialist", f"{team.second.full_name} · Invited specialist"],
            timeout=10000)
        p["rural"].screenshot(path=str(shots / "mesh-01-three-rural.png"), full_page=False)
        p["second"].screenshot(path=str(shots / "mesh-02-three-phone.png"), full_page=False)

        # the second specialist hangs up: the two others keep their pair, one tile each
        p["second"].click("#call-leave")
        for key in ("rural", "lead"):
            p[key].wait_for_function(f"() => ({LIVE_TILES})() === 1", timeout=30000)
        frames_advance_from_each(p["rural"], {ids["lead"]}, 10, 30000)
        # ... and rejoins: three again
        p["second"].click("#call-join")
        for key, page in p.items():
            frames_advance_from_each(page, {v for k, v in ids.items() if k != key}, 10, 90000)
        # a reload of the lead's page rebuilds both of its pairs by itself
        p["lead"].reload(timeout=60000)
        for key, page in p.items():
            frames_advance_from_each(page, {v for k, v in ids.items() if k != key}, 10, 90000)
        # an ICE restart (the network changed) restarts each of the rural doctor's two pairs, and
        # every picture keeps coming
        p["rural"].evaluate("() => window.huizhenCall.restartIce()")
        assert p["rural"].evaluate("() => window.huizhenCall.metrics.iceRestarts") == 2
        for key, page in p.items():
            frames_advance_from_each(page, {v for k, v in ids.items() if k != key}, 10, 60000)
        for key in ("rural", "lead", "second"):
            expect(p[key].locator("#call-status")).to_have_text("Connected", timeout=30000)


def test_a_trainee_watches_receive_only_raises_a_hand_and_the_lead_lets_them_speak(app, live_server, browser, shots):
    with _team(browser, live_server, trainee_too=True) as team:
        p = team.pages
        senders = {"rural": team.rural.id, "lead": team.lead.id}
        del p["second"]
        for page in p.values():
            page.goto(team.room, timeout=60000)
        tp = p["trainee"]
        expect(tp.locator("#call-join")).to_have_text("Join the call to watch and listen")
        for key in ("rural", "lead", "trainee"):
            p[key].click("#call-join")
            p[key].wait_for_function("() => document.getElementById('call').classList.contains('in-call')")
        frames_advance_from_each(tp, set(senders.values()), 10, 90000)
        for key in ("rural", "lead"):  # the trainee is in neither sender's tiles
            frames_advance_from_each(p[key], {v for k, v in senders.items() if k != key}, 5, 90000)
            assert p[key].evaluate(LIVE_TILES) == 1
        for selector in ("#call-mute", "#call-camera", "#call-audio-only", "#call-screen"):
            expect(tp.locator(selector)).to_be_hidden()
        tp.wait_for_timeout(2000)
        assert tp.evaluate(SENT) == {"audio": 0, "video": 0}  # no outbound RTP at all
        assert tp.evaluate("() => !document.getElementById('call-local').srcObject")  # no camera asked for
        tp.screenshot(path=str(shots / "mesh-03-trainee.png"), full_page=False)

        tp.click("#call-hand")
        hand = p["lead"].locator("#call-hands li")
        expect(hand).to_contain_text(f"{team.trainee.full_name} raised a hand")
        expect(p["rural"].locator("#call-hands li")).to_have_count(0)  # only the lead decides
        p["lead"].screenshot(path=str(shots / "mesh-04-lead-hand.png"), full_page=False)
        hand.get_by_role("button", name="Allow to speak").click()
        expect(tp.locator("#call-status")).to_contain_text("You may speak now")
        expect(tp.locator("#call-mute")).to_be_visible()
        deadline = time.monotonic() + 30
        while tp.evaluate(SENT)["audio"] < 50:
            assert time.monotonic() < deadline, tp.evaluate(SENT)
            time.sleep(0.3)
        assert tp.evaluate(SENT)["video"] == 0  # the microphone only

        expect(hand).to_contain_text("may speak")
        hand.get_by_role("button", name="Withdraw").click()
        expect(tp.locator("#call-status")).to_contain_text("closed your microphone")
        tp.wait_for_timeout(1500)
        before = tp.evaluate(SENT)["audio"]
        tp.wait_for_timeout(2000)
        assert tp.evaluate(SENT)["audio"] - before < 5  # nothing sent any more
