"""Two-browser calls on a shaped network: each Chromium in its own namespace, Huizhen and coturn in a
third (tests/netharness.py). Asserted with getStats: frames decoded keep growing."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from bench.room_load import USABLE_JS, Traffic
from webapp.extensions import db
from webapp.models import CallSession

pytestmark = [pytest.mark.browser, pytest.mark.netns]

INBOUND = """async () => {
  const pc = window.huizhenCall && window.huizhenCall.pc();
  const out = {frames: 0, audio: 0, rtt: null, relayed: null};
  if (!pc) return out;
  const stats = await pc.getStats();
  stats.forEach(r => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') out.frames = r.framesDecoded || 0;
    if (r.type === 'inbound-rtp' && r.kind === 'audio') out.audio = r.packetsReceived || 0;
    if (r.type === 'transport' && r.selectedCandidatePairId) {
      const pair = stats.get(r.selectedCandidatePairId);
      const local = pair && stats.get(pair.localCandidateId);
      out.rtt = pair ? pair.currentRoundTripTime : null;
      out.relayed = !!local && local.candidateType === 'relay';
    }
  });
  return out;
}"""


def _frames_advance(page, by: int = 10, timeout_ms: int = 30000) -> dict:
    """Wait until the page decodes `by` more remote video frames (and receives audio); its stats.

    Polled from Python: Playwright's wait_for_function does not await an async predicate (the
    Promise it returns is truthy, so it would return at once)."""
    base = page.evaluate(INBOUND)["frames"]
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        stats = page.evaluate(INBOUND)
        if stats["frames"] >= base + by and stats["audio"] > 0:
            return stats
        assert time.monotonic() < deadline, f"frames stuck at {stats} (from {base}) for {timeout_ms} ms"
        page.wait_for_timeout(200)


def _join(call) -> None:
    call.page_a.goto(call.room, timeout=60000)
    call.page_b.goto(call.room, timeout=60000)
    call.page_a.click("#call-join")
    # b joins once a's join is done, as doctors do (two joins at the same instant share one call
    # record: tests/video/test_call_race.py)
    expect(call.page_a.locator("#call-status")).to_contain_text("Waiting for the other doctor", timeout=60000)
    call.page_b.click("#call-join")


def _calls_of(consult) -> list[int]:
    db.session.rollback()  # see what the server committed
    return list(db.session.scalars(select(CallSession.id).where(CallSession.consult_id == consult.id)))


def test_good_profile_call_carries_video_on_the_direct_path(net_call, shots):
    net_call.start("good")
    _join(net_call)
    for page in (net_call.page_a, net_call.page_b):
        stats = _frames_advance(page)
        _frames_advance(page)  # still advancing
        assert stats["relayed"] is False, stats  # routed a <-> b through the server namespace
        expect(page.locator("#call-status")).to_have_text("Connected")
    net_call.page_a.screenshot(path=str(shots / "net-good-a.png"))


def test_rural_profile_call_carries_video_through_the_delayed_relay(net_call, shots):
    net_call.start("rural", relay=True)
    _join(net_call)
    for page in (net_call.page_a, net_call.page_b):
        stats = _frames_advance(page, timeout_ms=60000)
        _frames_advance(page, timeout_ms=30000)
        assert stats["relayed"] is True, stats
        # The relays add RTT/4 per direction each: >= ~150 ms between the browsers (jitter ±10 ms);
        # above it, queueing behind the video in the 512 kbit/s buckets (up to 400 ms each).
        assert stats["rtt"] is not None and 0.12 <= stats["rtt"] <= 2.0, stats
    assert net_call.harness.relays["a"].packets > 100 and net_call.harness.relays["b"].packets > 100
    net_call.page_b.screenshot(path=str(shots / "net-rural-b.png"))


def test_forced_relay_through_coturn_connects_when_nat_blocks_the_direct_path(net_call):
    net_call.start("good", nat=True, relay=True)
    _join(net_call)
    for page in (net_call.page_a, net_call.page_b):
        stats = _frames_advance(page)
        assert stats["relayed"] is True, stats
        page.wait_for_function("() => window.huizhenCall.metrics.relayed === true", timeout=15000)
        expect(page.locator("#call-quality")).to_contain_text("via relay")
    # No direct path: from a, b's address is never answered (without NAT b's kernel refuses at once).
    assert net_call.harness.probe_tcp("a", "10.77.2.2", 8000) == "timeout"
    net_call.harness.apply("good", nat=False)
    assert net_call.harness.probe_tcp("a", "10.77.2.2", 8000) == "refused"
    deadline = time.monotonic() + 15  # each page reports its connection over the socket, asynchronously
    while True:
        db.session.rollback()
        call = db.session.scalar(select(CallSession).where(CallSession.consult_id == net_call.consult.id))
        if call is not None and call.relayed is True:
            break
        assert time.monotonic() < deadline, (call and call.relayed, net_call.harness.coturn_log())
        time.sleep(0.2)


CANDIDATES = """async () => {
  const stats = await window.huizhenCall.pc().getStats(), out = {local: [], pairs: []};
  stats.forEach(r => {
    if (r.type === 'local-candidate') out.local.push({type: r.candidateType, address: r.address,
                                                      related: r.relatedAddress || null});
    if (r.type === 'candidate-pair') {
      const l = stats.get(r.localCandidateId), rm = stats.get(r.remoteCandidateId);
      out.pairs.push({local: l && l.candidateType, remote: rm && rm.candidateType, state: r.state});
    }
  });
  return out;
}"""


def test_behind_a_masquerading_nat_the_call_connects_through_coturn(net_call, shots):
    """Both browsers behind a symmetric MASQUERADE NAT, ICE free to try every path (no forced
    relay): their host addresses cannot be reached, their server-reflexive mappings are good for
    coturn only, and the call connects through coturn's relay."""
    net_call.start("good", nat=True)
    assert net_call.harness.seen_from("a") == "10.77.11.2"  # the server sees a's router, not a
    _join(net_call)
    for name, page in (("a", net_call.page_a), ("b", net_call.page_b)):
        _frames_advance(page, timeout_ms=60000)
        pair = page.evaluate(SELECTED)
        # through coturn: a relay candidate on one end at least (a side may reach the other's relay
        # address straight from its NAT mapping: coturn's permissions are per address)
        assert "relay" in (pair["local_type"], pair["remote_type"]), (name, pair)
        page.wait_for_function("() => window.huizhenCall.metrics.relayed === true", timeout=15000)
        expect(page.locator("#call-quality")).to_contain_text("via relay")
        cands = page.evaluate(CANDIDATES)
        host, wan = (("10.77.1.2", "10.77.11.2") if name == "a" else ("10.77.2.2", "10.77.12.2"))
        # the browser knows only its private address; coturn told it the NAT's
        assert {"type": "host", "address": host, "related": None} in cands["local"], cands
        mapped = {c["address"] for c in cands["local"] if c["type"] == "srflx"} | \
                 {c["related"] for c in cands["local"] if c["type"] == "relay"}
        assert mapped == {wan}, cands
        # and no pair without a relay on one end got through
        direct = [p for p in cands["pairs"] if "relay" not in (p["local"], p["remote"])]
        assert direct and all(p["state"] != "succeeded" for p in direct), cands["pairs"]
        print(name, "pairs", cands["pairs"])
    net_call.page_b.screenshot(path=str(shots / "net-nat-b.png"))


CONNECTED_AGAIN = re.compile(r"^(Connected|Connection recovered — video back on)$")


@pytest.mark.parametrize(("profile", "relay"), [("good", False), ("rural", True)], ids=["good-direct", "rural-relay"])
def test_a_15_second_drop_resumes_the_same_call_without_a_click(net_call, shots, profile, relay):
    net_call.start(profile, relay=relay)
    _join(net_call)
    for page in (net_call.page_a, net_call.page_b):
        _frames_advance(page, timeout_ms=60000)
    calls = _calls_of(net_call.consult)
    assert len(calls) == 1, calls
    for page in (net_call.page_a, net_call.page_b):  # what the doctors are told meanwhile, for the log
        page.evaluate("""() => { window.netPc = window.huizhenCall.pc(); window.netStatuses = [];
          const el = document.getElementById('call-status');
          new MutationObserver(() => window.netStatuses.push(el.textContent)).observe(el, {childList: true,
            characterData: true, subtree: true}); }""")

    net_call.harness.drop("a", 15)  # the rural doctor's link is down for 15 s, then back
    back = time.monotonic()
    for name, page in (("a", net_call.page_a), ("b", net_call.page_b)):
        try:
            _frames_advance(page, by=20, timeout_ms=45000)
            # connected, told in words: "Connected", or — when the bandwidth estimate climbed back
            # slower than the adaptation's quiet window after the drop (a loaded machine), and the
            # side went audio-only for a moment — "Connection recovered — video back on"
            expect(page.locator("#call-status")).to_have_text(CONNECTED_AGAIN)
            expect(page.locator("#call-status")).to_have_class(re.compile(r"\bok\b"))
        except AssertionError as exc:  # say what the doctors were told on the way
            told = {n: p.evaluate("() => [window.huizhenCall.pc() === window.netPc, window.netStatuses]")
                    for n, p in (("a", net_call.page_a), ("b", net_call.page_b))}
            raise AssertionError(f"{name} did not resume: {exc}; (same connection, statuses) {told}") from exc
    resumed_s = time.monotonic() - back
    net_call.page_a.screenshot(path=str(shots / f"net-drop-resumed-{profile}-a.png"))
    assert _calls_of(net_call.consult) == calls  # the same consult call record, no new one
    for name, page in (("a", net_call.page_a), ("b", net_call.page_b)):
        same_pc, statuses = page.evaluate("() => [window.huizhenCall.pc() === window.netPc, window.netStatuses]")
        print(f"{name}: same RTCPeerConnection {same_pc}, statuses {statuses}")
        # the call resumed: neither side tore down its connection (when the signaling socket came
        # back it rejoined with resume, not as a newcomer the other side rebuilds for)
        assert same_pc, (name, statuses)
    print(f"resumed {resumed_s:.1f} s after the link came back")


SELECTED = """async () => {
  const pc = window.huizhenCall && window.huizhenCall.pc();
  if (!pc) return null;
  const stats = await pc.getStats();
  let out = null;
  stats.forEach(r => {
    if (r.type === 'transport' && r.selectedCandidatePairId) {
      const pair = stats.get(r.selectedCandidatePairId);
      const local = pair && stats.get(pair.localCandidateId), remote = pair && stats.get(pair.remoteCandidateId);
      if (local && remote) out = {local: local.address, local_type: local.candidateType,
                                  remote: remote.address, remote_type: remote.candidateType, state: pair.state};
    }
  });
  return out;
}"""


CALL_STATE = """() => { const c = window.huizhenCall, pc = c.pc();
  return {ice: pc && pc.iceConnectionState, conn: pc && pc.connectionState, signaling: pc && pc.signalingState,
          socket: c.socket.connected, restarts: c.metrics.iceRestarts || 0, at: c.metrics.at}; }"""


@pytest.mark.parametrize(("side", "new_addr", "profile", "relay"),
                         [("a", "10.77.1.3", "good", False), ("b", "10.77.2.3", "good", False),
                          ("a", "10.77.1.3", "rural", True)],
                         ids=["rural-doctor-moves", "specialist-moves", "rural-doctor-moves-rural-relay"])
def test_a_link_that_changes_address_resumes_the_same_call_without_a_click(net_call, shots, side, new_addr,
                                                                          profile, relay):
    """One doctor's link gets a new address mid-call (a new lease, another access point): the call
    comes back by itself (ICE restart over a reconnected signaling socket) on the same call record
    and the same RTCPeerConnection, and its candidate pair uses the new address. Both roles: the
    rural doctor is the polite peer of the negotiation, the specialist the impolite one; and on the
    rural relay path, where the move also means a new TURN allocation."""
    net_call.start(profile, relay=relay)
    _join(net_call)
    pages = (("a", net_call.page_a), ("b", net_call.page_b))
    mover, other = (net_call.page_a, net_call.page_b) if side == "a" else (net_call.page_b, net_call.page_a)
    for _name, page in pages:
        _frames_advance(page, timeout_ms=60000)
    calls = _calls_of(net_call.consult)
    assert len(calls) == 1, calls
    before = mover.evaluate(SELECTED)
    if relay:
        clients = net_call.harness.relays[side].clients
        assert before["local_type"] == "relay" and clients == {net_call.harness.addr[side]}, (before, clients)
    else:
        assert before["local"] == net_call.harness.addr[side] != new_addr, before
    for _name, page in pages:
        page.evaluate("""() => { window.netPc = window.huizhenCall.pc(); window.netStatuses = [];
          const el = document.getElementById('call-status');
          new MutationObserver(() => window.netStatuses.push(el.textContent)).observe(el, {childList: true,
            characterData: true, subtree: true}); }""")

    net_call.harness.move(side, new_addr)
    moved, moved_at = time.monotonic(), time.time()
    for name, page in pages:
        try:
            _frames_advance(page, by=20, timeout_ms=max(1, 30 - (time.monotonic() - moved)) * 1000)
            expect(page.locator("#call-status")).to_have_text(CONNECTED_AGAIN)  # as after a drop
            expect(page.locator("#call-status")).to_have_class(re.compile(r"\bok\b"))
        except AssertionError as exc:
            told = {n: [p.evaluate("() => [window.huizhenCall.pc() === window.netPc, window.netStatuses]"),
                        p.evaluate(CALL_STATE), p.evaluate(SELECTED)] for n, p in pages}
            raise AssertionError(f"{name} did not resume: {exc}; (same pc, statuses), state, pair {told}") from exc
    resumed_s = time.monotonic() - moved
    mover.screenshot(path=str(shots / f"net-moved-resumed-{side}.png"))
    assert _calls_of(net_call.consult) == calls  # the same consult call record, no new one
    for name, page in pages:
        same_pc, statuses = page.evaluate("() => [window.huizhenCall.pc() === window.netPc, window.netStatuses]")
        print(f"{name}: same RTCPeerConnection {same_pc}, statuses {statuses}")
        assert same_pc, (name, statuses)
    # the pair in use now runs from the new address, as both sides see it
    mover_pair, other_pair = mover.evaluate(SELECTED), other.evaluate(SELECTED)
    if relay:  # a new allocation, from the new address (coturn sees the delay relay, which saw it)
        assert mover_pair["local_type"] == "relay" and new_addr in net_call.harness.relays[side].clients, mover_pair
    else:
        assert mover_pair["local"] == new_addr and other_pair["remote"] == new_addr, (mover_pair, other_pair)
    assert net_call.harness.seen_from(side) == new_addr
    for name, page in pages:  # what happened when, in seconds after the move
        at = page.evaluate("() => window.huizhenCall.metrics.at")
        print(name, {k: round(v / 1000 - moved_at, 1) for k, v in at.items() if v / 1000 > moved_at})
    print(f"resumed {resumed_s:.1f} s after {side}'s address changed; pairs {mover_pair}, {other_pair}")


AUDIO_IN = """async () => {
  const pc = window.huizhenCall && window.huizhenCall.pc();
  const out = {packets: 0, samples: 0, concealed: 0, video_out: 0};
  if (!pc) return out;
  (await pc.getStats()).forEach(r => {
    if (r.type === 'inbound-rtp' && r.kind === 'audio') {
      out.packets = r.packetsReceived || 0; out.samples = r.totalSamplesReceived || 0;
      out.concealed = r.concealedSamples || 0;
    }
    if (r.type === 'outbound-rtp' && r.kind === 'video') out.video_out += r.framesEncoded || 0;
  });
  return out;
}"""


def test_the_audio_profile_goes_audio_only_by_itself_and_video_returns_on_a_good_link(net_call, shots):
    """64 kbit/s, 300 ms, 5 % loss: both doctors go audio only by themselves, told in words, with
    audio arriving and little of it concealed; back on a good link, video returns by itself.

    The bounds are generous (30 s, 20 %) so that a busy CI machine does not fail the behaviour; the
    issue's targets (10 s, 10 %) are printed and reported from quiet runs (docs/benchmarks.md)."""
    net_call.start("good", relay=True)
    _join(net_call)
    pages = (("a", net_call.page_a), ("b", net_call.page_b))
    for _name, page in pages:
        _frames_advance(page, timeout_ms=60000)

    net_call.harness.apply("audio")
    shaped = time.monotonic()
    for _name, page in pages:
        # each side's own link is weak: it switches its video off and says so
        expect(page.locator("#call-status")).to_contain_text("switched to audio only",
                                                             timeout=max(1, 30 - (time.monotonic() - shaped)) * 1000)
    switched_s = time.monotonic() - shaped
    net_call.page_a.screenshot(path=str(shots / "net-audio-profile-a.png"))
    time.sleep(6)  # the video queued in the 64 kbit/s buckets before the switch drains first
    before = {name: page.evaluate(AUDIO_IN) for name, page in pages}
    time.sleep(10)
    for name, page in pages:
        after = page.evaluate(AUDIO_IN)
        got = after["packets"] - before[name]["packets"]
        samples = after["samples"] - before[name]["samples"]
        concealed = after["concealed"] - before[name]["concealed"]
        assert got > 100, (name, before[name], after)  # 20 ms packets: 500 in 10 s, DTX sends fewer
        print(f"{name}: {got} audio packets in 10 s, {100 * concealed / max(samples, 1):.1f} % concealed")
        assert samples > 0 and concealed / samples < 0.20, (name, concealed, samples)
        assert after["video_out"] == before[name]["video_out"], (name, "video frames still encoded")
    print(f"audio only {switched_s:.1f} s after the link became an audio link")

    net_call.harness.apply("good")
    # 15 s of a good link in a row bring each side's camera back (longer after a relapse while the
    # estimate climbs): frames decoded on a page are the other side's video, so both pages
    # decoding again means both sides send video again
    for _name, page in pages:
        _frames_advance(page, by=20, timeout_ms=90000)
    for _name, page in pages:
        # its own "Connection recovered — video back on", or the other's "video is back on" after it
        expect(page.locator("#call-status")).to_contain_text(re.compile(r"video (is )?back on"))
    assert len(_calls_of(net_call.consult)) == 1


def test_room_page_weight_cold_and_warm_on_the_rural_profile(net_call):
    net_call.start("rural")
    context = net_call.page_a.context
    results = {}
    for label, cold in (("cold", True), ("warm", False)):
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        if cold:
            cdp.send("Network.clearBrowserCache")
        traffic = Traffic(cdp)
        t0 = time.monotonic()
        page.goto(net_call.room, timeout=60000)
        page.wait_for_function(USABLE_JS, timeout=60000, polling=50)
        usable_s = time.monotonic() - t0
        page.wait_for_load_state("load")
        page.wait_for_timeout(1000)
        results[label] = (traffic.bytes, traffic.network_requests(), usable_s, traffic.urls)
        page.close()
    cold_bytes, cold_requests, cold_s, cold_urls = results["cold"]
    warm_bytes, warm_requests, warm_s, warm_urls = results["warm"]
    print({k: v[:3] for k, v in results.items()})
    # Generous bounds (the goal, <= 100 KB and <= 3 s cold, lives in bench/room_load.py).
    assert cold_requests <= 20 and cold_bytes <= 300 * 1024, cold_urls
    assert warm_requests <= 10 and warm_bytes <= 60 * 1024, warm_urls
    assert warm_bytes < cold_bytes / 2, (warm_urls, cold_urls)
    assert cold_s < 30 and warm_s < 30, results
