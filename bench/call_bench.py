"""Join-to-first-remote-frame: Huizhen's call path vs two Chromium peers connected directly in one page.

Run:  .venv/bin/python -m bench.call_bench [--runs 10] [--scenario return|first] [--out docs/benchmarks.md]
      .venv/bin/python -m bench.call_bench --mesh 2,3,4 [--runs 3] [--out docs/benchmarks.md]

Both paths run in the same headless Chromium (Debian's), with fake camera and microphone, in
the same run. The Huizhen path is the real room page: log in as the two demo doctors, the
specialist waits in the call, the rural doctor opens the room and, once it has loaded (chat and
case notes joined, signaling socket connected), clicks "Join call"; the time runs from that
click (getUserMedia, Socket.IO join, negotiation over /call, ICE, DTLS) to the first decoded
remote video frame (requestVideoFrameCallback). The direct path does getUserMedia and connects
two RTCPeerConnections in one page with no signaling server, up to the first remote frame.

--mesh N,...: the call with N people (a full mesh, one connection per pair). The booked demo consult
gets invited specialists as its extra participants; N pages open its room and click "Join call"
one after the other; the time runs from the first click until every page has decoded a first frame
from every other person. The direct path connects the same N people's full mesh inside one page
(N*(N-1)/2 pairs of RTCPeerConnections, no server). Then, 10 s into the call, each page's upload
(outbound RTP bytes over all its connections, for 5 s) in kbit/s.
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


MESH_DIRECT_JS = """async (n) => {
  const t0 = performance.now();
  const streams = [];
  for (let i = 0; i < n; i++) {
    streams.push(await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: true}));
  }
  const pcs = [], firsts = [];
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) {
    const a = new RTCPeerConnection(), b = new RTCPeerConnection();
    a.onicecandidate = e => e.candidate && b.addIceCandidate(e.candidate);
    b.onicecandidate = e => e.candidate && a.addIceCandidate(e.candidate);
    for (const [pc, from] of [[a, i], [b, j]]) {
      const video = document.createElement('video');
      video.muted = true; video.autoplay = true; video.playsInline = true;
      document.body.appendChild(video);
      firsts.push(new Promise(resolve => {
        pc.ontrack = e => { if (video.srcObject) return; video.srcObject = e.streams[0]; video.play().catch(() => {});
                            video.requestVideoFrameCallback(() => resolve(performance.now() - t0)); };
      }));
      streams[from].getTracks().forEach(t => pc.addTrack(t, streams[from]));
    }
    pcs.push(a, b);
    await a.setLocalDescription(); await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription(); await a.setRemoteDescription(b.localDescription);
  }
  const all = await Promise.all(firsts);
  pcs.forEach(pc => pc.close()); streams.forEach(s => s.getTracks().forEach(t => t.stop()));
  document.querySelectorAll('video').forEach(v => v.remove());
  return Math.max(...all);
}"""



def _within(promise: str, what: str, seconds: int = 30) -> str:
    """A page function awaiting a promise of the page (call.js's milestones), failing after a while."""
    return (f"() => Promise.race([{promise}, new Promise((_, reject) => setTimeout("
            f"() => reject(new Error('no {what} within {seconds} s')), {seconds * 1000}))])")


# The page's own call state, whatever its language: joined, and the first remote frame (call.js
# resolves huizhenCall.when at each milestone), so nothing polls a page while it sets a call up.
JOINED_JS = _within("window.huizhenCall.when('joined')", "join")
FIRST_FRAME_JS = _within("window.huizhenCall.when('first_frame')", "remote frame")

# Wall-clock ms of the page's join click and of its first frame from each other person.
MESH_TIMES_JS = """() => {
  const m = window.huizhenCall.metrics, origin = performance.timeOrigin;
  const frames = {};
  for (const [id, ms] of Object.entries(m.firstFrames)) frames[id] = origin + m.joinClickedAt + ms;
  return {click: origin + m.joinClickedAt, frames: frames};
}"""
UPLOAD_BYTES_JS = """async () => {
  let bytes = 0;
  for (const pc of Object.values(window.huizhenCall.pcs())) {
    (await pc.getStats()).forEach(r => {
      if (r.type === 'outbound-rtp') bytes += (r.bytesSent || 0) + (r.headerBytesSent || 0);
    });
  }
  return bytes;
}"""
EXTRA_PEOPLE = """
import sys
from sqlalchemy import select
from webapp import create_app
from webapp.auth.services import Registration, create_user
from webapp.consults import participants
from webapp.extensions import db
from webapp.models import AccountStatus, Consult, ConsultStatus, Role, User

app = create_app()
with app.app_context():
    consult = db.session.scalar(select(Consult).where(Consult.status == ConsultStatus.SCHEDULED))
    lead = consult.specialist
    second = db.session.scalar(select(User).where(User.email == "specialist2@demo.test"))
    third = create_user(Registration(
        email="specialist3@bench.test", password="huizhen-demo", full_name="Dr. Bench", role=Role.SPECIALIST,
        facility_id=second.facility_id, licence_number="610000000000399", specialty="cardiology",
        timezone="Asia/Shanghai"), status=AccountStatus.APPROVED)
    db.session.commit()
    for user in (second, third):
        participants.invite(lead, consult.ref, user.id, "specialist")
        participants.respond(user, consult.ref, accept=True)
"""
MESH_EMAILS = ("rural@demo.test", "specialist@demo.test", "specialist2@demo.test", "specialist3@bench.test")


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


def _start_server(port: int, workdir: Path, database_url: str | None, server: str = "gevent",
                  extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Huizhen on a loopback port with the demo data (a fresh SQLite, or the given PostgreSQL
    database emptied first); extra_env is added to the server's environment."""
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
    env.update(extra_env or {})
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_http(f"http://127.0.0.1:{port}/login")
    return proc


def _login(browser, base: str, email: str):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{base}/login")
    page.fill("#email", email)
    page.fill("#password", "huizhen-demo")
    page.click("main button[type=submit]")  # not the header's language switch
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
                spec.evaluate(JOINED_JS)  # waiting in the call
                for _ in range(runs):
                    if scenario == "first":
                        spec.click("#call-leave")
                        spec.click("#call-join")
                        spec.evaluate(JOINED_JS)
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
                    # the page's own milestone (call.js resolves it at the first remote frame): no
                    # polling of the page while the call is being set up
                    rural.evaluate(FIRST_FRAME_JS)
                    results["huizhen"].append(rural.evaluate("() => window.huizhenCall.metrics.firstRemoteFrameMs"))
                    at_r = rural.evaluate("() => window.huizhenCall.metrics.at")
                    at_s = spec.evaluate("() => window.huizhenCall.metrics.at")
                    m = rural.evaluate("() => window.huizhenCall.metrics.marks")
                    click = at_r["media"] - m["media"]
                    m["spec_offer_received"] = round(at_s.get("offer_received", click) - click)
                    m["spec_answer_sent"] = round(at_s.get("answer_sent", click) - click)
                    marks.append(m)
                    spec.evaluate("() => { window.benchPeerLeft = window.huizhenCall.next('peer_left'); }")
                    rural.click("#call-leave")
                    spec.evaluate(_within("window.benchPeerLeft", "hang-up of the rural doctor"))
                ctx_d.close()
                ctx_r.close()
                ctx_s.close()
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    return results


def measure_mesh(sizes: list[int], runs: int, port: int, database_url: str | None = None,
                 server: str = "gevent") -> dict[int, dict[str, list[float]]]:
    """For each call size N: `runs` times, N pages join the call; the time from the first click until
    every page has every other's first frame, the same for a direct in-page mesh, and each page's upload."""
    results: dict[int, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc = _start_server(port, Path(tmp), database_url, server)
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "DATABASE_URL": database_url or f"sqlite:///{Path(tmp) / 'bench.db'}",
               "HUIZHEN_ENV": "development", "UPLOAD_DIR": str(Path(tmp) / "uploads")}
        subprocess.run([sys.executable, "-c", EXTRA_PEOPLE], cwd=ROOT, env=env, check=True, capture_output=True)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                logged = [_login(browser, base, email) for email in MESH_EMAILS]
                spec = logged[1][1]
                spec.goto(f"{base}/")
                room_link = spec.locator(".timeline a[href^='/consults/']").first.get_attribute("href")
                room = f"{base}{room_link}/room"
                ctx_d = browser.new_context()
                direct_page = ctx_d.new_page()
                direct_page.goto(f"{base}/login")
                for n in sizes:
                    got: dict[str, list[float]] = {"huizhen": [], "direct": [], "upload": []}
                    pages = [page for _ctx, page in logged[:n]]
                    for _ in range(runs):
                        got["direct"].append(direct_page.evaluate(MESH_DIRECT_JS, n))
                        for page in pages:
                            page.goto(room)
                            page.wait_for_function("() => window.huizhenCall.socket.connected")
                        for page in pages:
                            page.click("#call-join")
                        for page in pages:
                            page.wait_for_function(
                                f"() => Object.keys(window.huizhenCall.metrics.firstFrames).length >= {n - 1}",
                                timeout=120000)
                        times = [page.evaluate(MESH_TIMES_JS) for page in pages]
                        start = min(t["click"] for t in times)
                        got["huizhen"].append(max(max(t["frames"].values()) for t in times) - start)
                        pages[0].wait_for_timeout(10000)
                        before = [page.evaluate(UPLOAD_BYTES_JS) for page in pages]
                        pages[0].wait_for_timeout(5000)
                        after = [page.evaluate(UPLOAD_BYTES_JS) for page in pages]
                        got["upload"] += [(a - b) * 8 / 5 / 1000 for a, b in zip(after, before, strict=True)]
                        for page in pages:
                            page.click("#call-leave")
                        pages[0].wait_for_timeout(1000)
                    results[n] = got
                ctx_d.close()
                for ctx, _page in logged:
                    ctx.close()
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return results


def mesh_table(results: dict[int, dict[str, list[float]]], runs: int) -> str:
    """The N-party results as a Markdown table."""
    lines = ["| people | runs | direct in-page mesh: median ms | Huizhen: median ms (max) | ratio | "
             "upload per person kbit/s: median (min–max) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for n, got in results.items():
        direct, hz, up = statistics.median(got["direct"]), statistics.median(got["huizhen"]), got["upload"]
        lines.append(f"| {n} | {runs} | {direct:.0f} | {hz:.0f} ({max(got['huizhen']):.0f}) | {hz / direct:.2f} | "
                     f"{statistics.median(up):.0f} ({min(up):.0f}–{max(up):.0f}) |")
    return "\n".join(lines)


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
    parser.add_argument("--mesh", default=None, help="call sizes for the N-party join, e.g. 2,3,4")
    args = parser.parse_args(argv)
    if args.mesh:
        sizes = [int(x) for x in args.mesh.split(",")]
        table = mesh_table(measure_mesh(sizes, args.runs, args.port, args.database_url, args.server), args.runs)
        print(table)
        if args.out:
            load = os.getloadavg()
            with open(args.out, "a", encoding="utf-8") as fh:
                fh.write(f"\n## The call with N people: join to every first frame, and upload — "
                         f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\nMachine: {platform.node()}, {os.cpu_count()} "
                         f"cores, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}. Server: {args.server}. "
                         f"Command: `.venv/bin/python -m bench.call_bench --mesh {args.mesh} --runs {args.runs}"
                         f" --out {args.out}`\n\n{table}\n")
        return 0
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
        f"Ratio of medians (Huizhen / direct): **{ratio:.2f}** (target ≤ 1.2, issue 15).",
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
