"""The server's part of call setup: a /call join that carries an offer, and relayed ICE candidates.

Run:  .venv/bin/python -m bench.signal_hop [--joins 30] [--database-url postgresql+psycopg://...]

Starts Huizhen like bench/call_bench.py (gunicorn gevent worker, production config, demo data;
the /call join, signal and leave rate limits off, since one client here joins and signals far
faster than a person), signs in the demo specialist and rural doctor through the login form,
connects one python-socketio client each to /call, and has the specialist wait in the call. Then,
--joins times, the rural doctor:

- joins with a real SDP offer (Chromium's, audio and video, ~5 kB: bench/chromium_offer.sdp),
  timed from the emit to the offer arriving at the specialist, and to the join's ack;
- sends 5 ICE candidates one by one (the single-candidate signal), each timed from the emit to its
  arrival at the specialist;
- sends the 8 candidates Chromium gathered for that offer in one batched ``candidates`` signal,
  timed from the emit to its arrival (a server without batching refuses it: reported as such);
- leaves.

Both clients run on this machine, so the times are the server's work plus two loopback hops,
without any browser.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import socketio

from bench.call_bench import _start_server

HERE = Path(__file__).resolve().parent
# A Chromium 156 offer (fake camera and microphone, audio + video, taken right after
# setLocalDescription, as call.js sends it with the join), and the host candidates it then gathered.
OFFER = {"type": "offer", "sdp": (HERE / "chromium_offer.sdp").read_text(encoding="ascii").replace("\n", "\r\n")}
CANDIDATES = [
    {"candidate": text, "sdpMid": mid, "sdpMLineIndex": int(mid)}
    for mid in ("0", "1")
    for text in (
        "candidate:2019822829 1 udp 2122194687 192.0.2.2 53298 typ host generation 0 network-id 1",
        "candidate:3003305229 1 udp 2122265343 fd00::2 40432 typ host generation 0 network-id 2",
        "candidate:2261702777 1 tcp 1518214911 192.0.2.2 9 typ host tcptype active generation 0 network-id 1",
        "candidate:1302862233 1 tcp 1518285567 fd00::2 9 typ host tcptype active generation 0 network-id 2",
    )
]
CANDIDATE = CANDIDATES[0]
# One client joins and signals in a loop: the per-connection limits meant for people are off.
NO_LIMITS = {"SOCKET_RATE_LIMITS": "/call join=off; /call signal=off; /call leave=off"}


def _signed_in(base: str, email: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{base}/login", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    r = session.post(f"{base}/login", data={"email": email, "password": "huizhen-demo", "csrf_token": token},
                     allow_redirects=False, timeout=10)
    r.raise_for_status()
    return session


def _client(base: str, session: requests.Session) -> socketio.Client:
    client = socketio.Client(reconnection=False)
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    client.connect(base, namespaces=["/call"], transports=["websocket"], headers={"Cookie": cookie})
    return client


def _p90(values: list[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))]


class _Arrivals:
    """The specialist's side: when the next signal of a given type arrived."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.kind: str | None = None
        self.at = 0.0
        self.message: dict | None = None

    def expect(self, kind: str) -> None:
        self.kind, self.message = kind, None
        self.event.clear()

    def __call__(self, msg: dict) -> None:
        if msg.get("type") == self.kind and not self.event.is_set():
            self.at, self.message = time.perf_counter(), msg
            self.event.set()

    def wait(self, t0: float) -> float:
        if not self.event.wait(5):
            raise RuntimeError(f"no {self.kind} signal reached the other client within 5 s")
        return (self.at - t0) * 1000


def measure(joins: int, port: int, database_url: str | None) -> dict[str, list[float]]:
    """Join/leave `joins` times; return ms for offer arrival, join ack and candidate arrivals."""
    with tempfile.TemporaryDirectory() as tmp:
        server = _start_server(port, Path(tmp), database_url, "gevent", extra_env=NO_LIMITS)
        base = f"http://127.0.0.1:{port}"
        clients: list[socketio.Client] = []
        try:
            spec_http, rural_http = _signed_in(base, "specialist@demo.test"), _signed_in(base, "rural@demo.test")
            home = spec_http.get(f"{base}/", timeout=10).text  # the booked consult, from "Upcoming"
            ref = re.search(r'<ul class="timeline">.*?href="/consults/([^"/]+)"', home, re.S).group(1)
            spec, rural = _client(base, spec_http), _client(base, rural_http)
            clients += [spec, rural]
            arrivals = _Arrivals()
            spec.on("signal", arrivals, namespace="/call")
            assert spec.call("join", {"ref": ref}, namespace="/call")["ok"]
            out: dict[str, list[float]] = {"join with offer: offer at the other client": [], "join ack": [],
                                           "one ICE candidate at the other client": [],
                                           f"{len(CANDIDATES)} candidates in one signal at the other client": []}
            offer_at, ack_at, single_at, batch_at = out.values()
            batch_refused = None
            for _ in range(joins):
                arrivals.expect("offer")
                t0 = time.perf_counter()
                ack = rural.call("join", {"ref": ref, "offer": OFFER}, namespace="/call")
                t1 = time.perf_counter()
                assert ack["ok"], ack
                offer_at.append(arrivals.wait(t0))
                ack_at.append((t1 - t0) * 1000)
                for _ in range(5):
                    arrivals.expect("candidate")
                    t0 = time.perf_counter()
                    rural.emit("signal", {"ref": ref, "to": ack["offered_to"], "type": "candidate",
                                          "candidate": CANDIDATE}, namespace="/call")
                    single_at.append(arrivals.wait(t0))
                if batch_refused is None:
                    arrivals.expect("candidates")
                    t0 = time.perf_counter()
                    got = rural.call("signal", {"ref": ref, "to": ack["offered_to"], "type": "candidates",
                                                "candidates": CANDIDATES}, namespace="/call")
                    if got.get("ok"):
                        batch_at.append(arrivals.wait(t0))
                        assert len(arrivals.message["candidates"]) == len(CANDIDATES)
                    else:
                        batch_refused = got.get("message", got)
                assert rural.call("leave", {"ref": ref}, namespace="/call")["ok"]
            if batch_refused is not None:
                print(f"the batched candidates signal was refused: {batch_refused}", file=sys.stderr)
            return out
        finally:
            for client in clients:
                client.disconnect()
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:  # gunicorn's graceful stop waits on open sockets
                server.kill()
                server.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--joins", type=int, default=30)
    parser.add_argument("--port", type=int, default=5093)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite")
    args = parser.parse_args(argv)
    results = measure(args.joins, args.port, args.database_url)
    print(f"database: {'PostgreSQL' if args.database_url else 'SQLite'}; server: gunicorn gevent worker; "
          f"offer {len(OFFER['sdp'])} bytes")
    print("| measure | n | median ms | p90 ms |\n| --- | --- | --- | --- |")
    for name, values in results.items():
        if values:
            print(f"| {name} | {len(values)} | {statistics.median(values):.1f} | {_p90(values):.1f} |")
        else:
            print(f"| {name} | 0 | refused | — |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
