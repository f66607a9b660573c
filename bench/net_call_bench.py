"""Join-to-first-frame and join-to-first-audio per network profile, through the shaped-network harness.

Run (as root):  .venv/bin/python -m bench.net_call_bench [--runs 3] [--profiles good,rural,poor,audio]
                [--out docs/benchmarks.md]

Each Chromium runs in its own network namespace, Huizhen (gunicorn, gevent worker, production
config, SQLite with the demo data) and coturn in a third (tests/netharness.py,
docs/network-harness.md). Every call is forced through coturn (iceTransportPolicy relay), so all
media crosses the profile's delay relays as well as its bandwidth cap and loss.

Per profile and run, side by side in the same two browsers:

- Huizhen: the specialist (browser b) waits in the call; the rural doctor (browser a) opens the
  room, waits until it is usable, clicks "Join call"; measured from that click to a's first
  decoded remote video frame (requestVideoFrameCallback) and to a's first received remote audio
  packet (getStats inbound-rtp audio packetsReceived > 0, polled every 10 ms).
- direct: the same two browsers, each on a bare page of the same origin, with no signaling server:
  b has its camera on; a does getUserMedia, creates the offer (full ICE gathering), the bench hands
  it to b and b's answer back (Playwright calls), to a's first remote frame and first audio packet.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.netharness import PROFILES, SERVER_IP, SERVER_PORT, NetHarness, die_with_parent, in_netns

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream"]

FIRST_AUDIO_POLL = """(pcOf, t0) => new Promise(resolve => {
  const tick = async () => {
    const pc = pcOf();
    if (pc) {
      let n = 0;
      (await pc.getStats()).forEach(r => {
        if (r.type === 'inbound-rtp' && r.kind === 'audio') n = r.packetsReceived || 0;
      });
      if (n > 0) return resolve(performance.now() - t0);
    }
    setTimeout(tick, 10);
  };
  tick();
})"""

# b: its camera is on before a starts (as Huizhen's waiting side)
DIRECT_B_READY = """async () => {
  window.benchStream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
  return true;
}"""

DIRECT_A_OFFER = """async (iceServers) => {
  const gathered = pc => new Promise(r => { if (pc.iceGatheringState === 'complete') r();
    else pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && r()); });
  window.benchT0 = performance.now();
  const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
  const pc = new RTCPeerConnection({iceServers, iceTransportPolicy: 'relay'});
  window.benchPc = pc;
  const video = document.createElement('video');
  video.muted = true; video.autoplay = true; video.playsInline = true; document.body.appendChild(video);
  window.benchFrame = new Promise(resolve => {
    pc.ontrack = e => { if (e.track.kind !== 'video') return;
      video.srcObject = e.streams[0]; video.play().catch(() => {});
      video.requestVideoFrameCallback(() => resolve(performance.now() - window.benchT0)); };
  });
  window.benchAudio = (FIRST_AUDIO_POLL)(() => window.benchPc, window.benchT0);
  stream.getTracks().forEach(t => pc.addTrack(t, stream));
  await pc.setLocalDescription();
  await gathered(pc);
  return pc.localDescription.sdp;
}""".replace("FIRST_AUDIO_POLL", FIRST_AUDIO_POLL)

DIRECT_B_ANSWER = """async ([iceServers, sdp]) => {
  const gathered = pc => new Promise(r => { if (pc.iceGatheringState === 'complete') r();
    else pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && r()); });
  const pc = new RTCPeerConnection({iceServers, iceTransportPolicy: 'relay'});
  window.benchPc = pc;
  window.benchStream.getTracks().forEach(t => pc.addTrack(t, window.benchStream));
  await pc.setRemoteDescription({type: 'offer', sdp});
  await pc.setLocalDescription();
  await gathered(pc);
  return pc.localDescription.sdp;
}"""

DIRECT_A_FINISH = """async (sdp) => {
  await window.benchPc.setRemoteDescription({type: 'answer', sdp});
  const timeout = new Promise(r => setTimeout(() => r(null), 60000));
  return [await Promise.race([window.benchFrame, timeout]), await Promise.race([window.benchAudio, timeout])];
}"""

DIRECT_CLOSE = """() => { if (window.benchPc) window.benchPc.close(); window.benchPc = null;
  document.querySelectorAll('video').forEach(v => v.remove()); }"""


def _wait_port_in(ns: str, port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    def attempt() -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex((SERVER_IP, port)) == 0

    deadline = time.monotonic() + timeout
    while not in_netns(ns, attempt):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("Huizhen did not start in the server namespace")
        time.sleep(0.2)


def _start_huizhen(h: NetHarness, workdir: Path) -> subprocess.Popen:
    """gunicorn (gevent worker, production config) in the server namespace, with the demo data."""
    base = f"http://{SERVER_IP}:{SERVER_PORT}"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}", "FLASK_APP": "wsgi.py",
           "HUIZHEN_ENV": "development", "ALLOWED_ORIGINS": base, "UPLOAD_DIR": str(workdir / "uploads"),
           "ROOM_OPENS_MINUTES_BEFORE": "1440"}
    flask = [sys.executable, "-m", "flask"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    subprocess.run([*flask, "seed-demo"], cwd=ROOT, env=env, check=True, capture_output=True)
    env.update({"HUIZHEN_ENV": "production", "SOCKETIO_ASYNC_MODE": "gevent", "SECRET_KEY": secrets.token_urlsafe(48),
                "SESSION_COOKIE_SECURE": "0", "HUIZHEN_ALLOW_SQLITE": "1", "LOGIN_RATE_LIMIT": "1000 per minute",
                "TURN_URLS": h.turn_url, "TURN_SECRET": h.turn_secret, "STUN_URLS": "", "FORCE_TURN_RELAY": "1"})
    command = ["ip", "netns", "exec", h.server_ns, str(Path(sys.executable).parent / "gunicorn"),
               "--worker-class", "gevent", "--workers", "1", "--bind", f"{SERVER_IP}:{SERVER_PORT}", "wsgi:app"]
    log = open(workdir / "huizhen.log", "wb")  # noqa: SIM115 - for the process's life
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent)
    _wait_port_in(h.server_ns, SERVER_PORT, proc)
    return proc


def _login(browser, base: str, email: str):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{base}/login", timeout=120000)
    page.fill("#email", email)
    page.fill("#password", "huizhen-demo")
    page.click("main button[type=submit]")
    page.wait_for_url(lambda u: "/login" not in u, timeout=120000)
    return context, page


def _huizhen_run(rural, spec, room: str) -> tuple[float | None, float | None]:
    rural.goto(room, timeout=120000)
    rural.wait_for_function("() => window.huizhenCall && window.huizhenCall.socket.connected"
                            " && window.huizhenRoom.state().joined", timeout=120000)
    rural.evaluate(f"""() => {{ window.benchAudio = null;
      document.getElementById('call-join').addEventListener('click', () => {{
        ({FIRST_AUDIO_POLL})(() => window.huizhenCall.pc(), performance.now()).then(ms => window.benchAudio = ms);
      }}, {{once: true}}); }}""")
    rural.click("#call-join")
    frame = audio = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (frame is None or audio is None):
        frame, audio = rural.evaluate("() => [window.huizhenCall.metrics.firstRemoteFrameMs, window.benchAudio]")
        time.sleep(0.05)
    rural.click("#call-leave")
    spec.wait_for_function("() => { const pc = window.huizhenCall.pc();"
                           " return !pc || pc.connectionState !== 'connected'; }", timeout=60000)
    spec.wait_for_timeout(1000)
    return frame, audio


def _direct_run(page_a, page_b, ice_servers: list) -> tuple[float | None, float | None]:
    page_b.evaluate(DIRECT_B_READY)
    offer = page_a.evaluate(DIRECT_A_OFFER, ice_servers)
    answer = page_b.evaluate(DIRECT_B_ANSWER, [ice_servers, offer])
    frame, audio = page_a.evaluate(DIRECT_A_FINISH, answer)
    page_a.evaluate(DIRECT_CLOSE)
    page_b.evaluate(DIRECT_CLOSE)
    return frame, audio


def measure(profiles: list[str], runs: int) -> dict[str, dict[str, list]]:
    """For each profile, `runs` interleaved Huizhen and direct calls; timings in ms (None: none within 60 s)."""
    results: dict[str, dict[str, list]] = {}
    h = NetHarness().start()
    try:
        with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
            server = _start_huizhen(h, Path(tmp))
            try:
                base = f"http://{SERVER_IP}:{SERVER_PORT}"
                ba, bb = h.launch(p.chromium, "a", ARGS), h.launch(p.chromium, "b", ARGS)
                _, rural = _login(ba, base, "rural@demo.test")
                ctx_s, spec = _login(bb, base, "specialist@demo.test")
                spec.goto(f"{base}/")
                room = base + spec.locator(".timeline a[href^='/consults/']").first.get_attribute("href") + "/room"
                spec.goto(room)
                spec.wait_for_function("() => window.huizhenCall && window.huizhenCall.socket.connected", timeout=60000)
                spec.click("#call-join")  # the demo doctors read Chinese: wait on state, not words
                spec.wait_for_function("() => window.huizhenCall.pc() !== null", timeout=60000)
                # the direct path uses the same TURN credentials the room was given
                ice = spec.evaluate("() => JSON.parse(document.getElementById('call').dataset.iceServers || '[]')")
                da, db = ba.new_context().new_page(), bb.new_context().new_page()
                for page in (da, db):
                    page.goto(f"{base}/login", timeout=120000)
                for name in profiles:
                    h.apply(name)
                    res = results[name] = {"hz_frame": [], "hz_audio": [], "direct_frame": [], "direct_audio": []}
                    for _ in range(runs):
                        f, a = _direct_run(da, db, ice)
                        res["direct_frame"].append(f)
                        res["direct_audio"].append(a)
                        f, a = _huizhen_run(rural, spec, room)
                        res["hz_frame"].append(f)
                        res["hz_audio"].append(a)
                        print(name, {k: v[-1] for k, v in res.items()}, flush=True)
                h.apply("good")
                ctx_s.close()
            finally:
                server.terminate()
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
    finally:
        h.stop()
    return results


def _median(values: list) -> str:
    got = [v for v in values if v is not None]
    missing = len(values) - len(got)
    text = f"{statistics.median(got):.0f}" if got else "—"
    return text + (f" ({missing} none)" if missing else "")


def _ratio(a: list, b: list) -> str:
    a, b = [v for v in a if v is not None], [v for v in b if v is not None]
    return f"{statistics.median(a) / statistics.median(b):.2f}" if a and b else "—"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profiles", default="good,rural,poor,audio")
    parser.add_argument("--out", type=Path, default=None, help="append the results as Markdown to this file")
    args = parser.parse_args(argv)
    profiles = [p for p in args.profiles.split(",") if p]
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        parser.error(f"unknown profile(s) {unknown}; known: {', '.join(PROFILES)}")
    results = measure(profiles, args.runs)
    lines = ["| profile | runs | direct: first frame ms | Huizhen: first frame ms | ratio | "
             "direct: first audio ms | Huizhen: first audio ms | ratio |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in profiles:
        r = results[name]
        p = PROFILES[name]
        shape = ("unshaped" if p.rate_kbit is None
                 else f"{p.rate_kbit} kbit/s, {p.rtt_ms} ms RTT ±{p.jitter_ms}, {p.loss_pct} %")
        lines.append(f"| {name} ({shape}) | {args.runs} | {_median(r['direct_frame'])} | {_median(r['hz_frame'])} "
                     f"| {_ratio(r['hz_frame'], r['direct_frame'])} | {_median(r['direct_audio'])} "
                     f"| {_median(r['hz_audio'])} | {_ratio(r['hz_audio'], r['direct_audio'])} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        load = os.getloadavg()
        header = ("\n## Join to first frame and first audio per network profile — "
                  f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
                  f"Machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                  f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}. Browsers, Huizhen (gunicorn gevent, "
                  "SQLite) and coturn in network namespaces (docs/network-harness.md), every call forced through "
                  "coturn; medians in ms from the join click (Huizhen) / from getUserMedia (direct). "
                  f"Command: `.venv/bin/python -m bench.net_call_bench --runs {args.runs} --profiles {args.profiles}"
                  f" --out {args.out}`\n\n")
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(header + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
