"""Join-to-first-remote-frame: Huizhen's call path vs two Chromium peers connected directly in one page.

Run:  .venv/bin/python -m bench.call_bench [--runs 10] [--scenario return|first] [--out docs/benchmarks.md]

Both paths run in the same headless Chromium (Debian's), with fake camera and microphone, in
the same run. The Huizhen path is the real room page: log in as the two demo doctors, the
specialist waits in the call, the rural doctor opens the room and, once it has loaded (chat and
case notes joined, signaling socket connected), clicks "Join call"; the time runs from that
click (getUserMedia, Socket.IO join, negotiation over /call, ICE, DTLS) to the first decoded
remote video frame (requestVideoFrameCallback). The direct path does getUserMedia and connects
two RTCPeerConnections in one page with no signaling server, up to the first remote frame.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream"]

DIRECT_JS = """async () => {
  const t0 = performance.now();
  const stream = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: true});
  const a = new RTCPeerConnection(), b = new RTCPeerConnection();
  a.onicecandidate = e => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = e => e.candidate && a.addIceCandidate(e.candidate);
  const video = document.createElement('video');
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.appendChild(video);
  const first = new Promise(resolve => {
    b.ontrack = e => { video.srcObject = e.streams[0]; video.play().catch(() => {});
                       video.requestVideoFrameCallback(() => resolve(performance.now() - t0)); };
  });
  stream.getTracks().forEach(t => a.addTrack(t, stream));
  await a.setLocalDescription(); await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(); await a.setRemoteDescription(b.localDescription);
  const ms = await first;
  a.close(); b.close(); stream.getTracks().forEach(t => t.stop()); video.remove();
  return ms;
}"""


def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _start_server(port: int, workdir: Path, database_url: str | None, server: str = "gevent") -> subprocess.Popen:
    if database_url and database_url.startswith("postgresql"):
        from sqlalchemy import create_engine, text

        engine = create_engine(database_url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    env = {**os.environ, "DATABASE_URL": database_url or f"sqlite:///{workdir / 'bench.db'}", "FLASK_APP": "wsgi.py",
           "HUIZHEN_ENV": "development", "ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
           "UPLOAD_DIR": str(workdir / "uploads"),
           "ROOM_OPENS_MINUTES_BEFORE": "1440"}  # the demo's booked consult lies ahead: its room opens now
    flask = [sys.executable, "-m", "flask"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    subprocess.run([*flask, "seed-demo"], cwd=ROOT, env=env, check=True, capture_output=True)
    if server == "gevent":  # the production mode: gunicorn's gevent worker, production config
        env.update({"HUIZHEN_ENV": "production", "SOCKETIO_ASYNC_MODE": "gevent",
                    "SECRET_KEY": secrets.token_urlsafe(48),
                    "SESSION_COOKIE_SECURE": "0",  # plain http on loopback
                    "HUIZHEN_ALLOW_SQLITE": "1", "LOGIN_RATE_LIMIT": "1000 per minute"})
        command = [str(Path(sys.executable).parent / "gunicorn"), "--worker-class", "gevent", "--workers", "1",
                   "--bind", f"127.0.0.1:{port}", "wsgi:app"]
    else:  # `make run`'s development server
        command = [*flask, "run", "--port", str(port)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_http(f"http://127.0.0.1:{port}/login")
    return proc


def _login(browser, base: str, email: str):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{base}/login")
    page.fill("#email", email)
    page.fill("#password", "huizhen-demo")
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "/login" not in u)
    return context, page


def measure(runs: int, port: int, database_url: str | None = None, server: str = "gevent",
            scenario: str = "return") -> dict[str, list]:
    """Run both paths `runs` times, interleaved, and return the timings in ms.

    scenario "return": the specialist stays in the call and the rural doctor joins, leaves, joins
    again (after a hang-up the waiting side holds a fresh connection). "first": before every run
    the specialist also leaves and joins again, so each run is the first meeting of the call (the
    waiting side's own join offer went to nobody and its connection is rebuilt for the answer).
    """
    with tempfile.TemporaryDirectory() as tmp:
        server = _start_server(port, Path(tmp), database_url, server)
        base = f"http://127.0.0.1:{port}"
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                ctx_s, spec = _login(browser, base, "specialist@demo.test")
                ctx_r, rural = _login(browser, base, "rural@demo.test")
                spec.goto(f"{base}/")
                # the booked consult, from the specialist's "Upcoming consultations"
                room_link = spec.locator(".timeline a[href^='/consults/']").first.get_attribute("href")
                room = f"{base}{room_link}/room"
                ctx_d = browser.new_context()  # its own window: never a background tab of the room
                direct_page = ctx_d.new_page()
                direct_page.goto(f"{base}/login")
                results: dict[str, list] = {"huizhen": [], "direct": [], "marks": []}
                marks = results["marks"]
                spec.goto(room)
                spec.click("#call-join")
                spec.wait_for_function("() => document.getElementById('call-status').textContent.includes('Waiting')")
                for _ in range(runs):
                    if scenario == "first":
                        spec.click("#call-leave")
                        spec.click("#call-join")
                        spec.wait_for_function(
                            "() => document.getElementById('call-status').textContent.includes('Waiting')")
                    results["direct"].append(direct_page.evaluate(DIRECT_JS))
                    rural.goto(room)
                    rural.bring_to_front()
                    # as a person would: the room has loaded and is connected before "Join call"
                    rural.wait_for_load_state("networkidle")
                    rural.wait_for_function("() => window.huizhenCall.socket.connected")
                    # ... and has joined its chat and case notes (the page's first socket events,
                    # which the server handles in order on the page's one connection)
                    rural.wait_for_function("() => window.huizhenRoom.state().joined"
                                            " && (!window.huizhenNotes || window.huizhenNotes.state().joined)")
                    rural.click("#call-join")
                    rural.wait_for_function("() => window.huizhenCall.metrics.firstRemoteFrameMs !== null",
                                            timeout=30000)
                    results["huizhen"].append(rural.evaluate("() => window.huizhenCall.metrics.firstRemoteFrameMs"))
                    at_r = rural.evaluate("() => window.huizhenCall.metrics.at")
                    at_s = spec.evaluate("() => window.huizhenCall.metrics.at")
                    m = rural.evaluate("() => window.huizhenCall.metrics.marks")
                    click = at_r["media"] - m["media"]
                    m["spec_offer_received"] = round(at_s.get("offer_received", click) - click)
                    m["spec_answer_sent"] = round(at_s.get("answer_sent", click) - click)
                    marks.append(m)
                    rural.click("#call-leave")
                    spec.wait_for_function("() => document.getElementById('call-status').textContent.includes('left')")
                ctx_d.close()
                ctx_r.close()
                ctx_s.close()
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    return results


def _summary(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return statistics.median(values), p90, min(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--port", type=int, default=5077)
    parser.add_argument("--database-url", default=None,
                        help="e.g. postgresql+psycopg://postgres@127.0.0.1:5432/huizhen_bench "
                             "(default: a temporary SQLite)")
    parser.add_argument("--server", choices=("gevent", "flask"), default="gevent",
                        help="gevent: gunicorn -k gevent, production config (default); "
                             "flask: `flask run` as in make run")
    parser.add_argument("--scenario", choices=("return", "first"), default="return",
                        help="return: the specialist waits in the call while the rural doctor joins, leaves and "
                             "joins again (default); first: both join afresh for every run")
    parser.add_argument("--out", type=Path, default=None, help="append the results as Markdown to this file")
    args = parser.parse_args(argv)
    results = measure(args.runs, args.port, args.database_url, args.server, args.scenario)
    hz, direct = _summary(results["huizhen"]), _summary(results["direct"])
    ratio = hz[0] / direct[0]
    lines = [
        "| path | runs | median ms | p90 ms | min ms |",
        "| --- | --- | --- | --- | --- |",
        f"| two Chromium peers, direct in one page | {args.runs} | {direct[0]:.0f} | {direct[1]:.0f} "
        f"| {direct[2]:.0f} |",
        f"| Huizhen room: join click to first remote frame | {args.runs} | {hz[0]:.0f} | {hz[1]:.0f} | {hz[2]:.0f} |",
        "",
        f"Ratio of medians (Huizhen / direct): **{ratio:.2f}** (target ≤ 1.5).",
    ]
    table = "\n".join(lines)
    print(table)
    print("Huizhen path milestones (ms after the click), per run:")
    for m in results["marks"]:
        print("  ", m)
    if args.out:
        load = os.getloadavg()
        header = (f"\n## Join to first remote frame — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
                  f"Machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                  f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}. "
                  f"Database: {'PostgreSQL' if args.database_url else 'SQLite'}. Server: {args.server}. "
                  f"Command: `.venv/bin/python -m bench.call_bench --runs {args.runs} --server {args.server}"
                  f" --scenario {args.scenario}"
                  f"{' --database-url ' + args.database_url if args.database_url else ''} --out {args.out}`\n\n")
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(header + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
