"""The server's part of call setup: a /call join that carries an offer, and a relayed ICE candidate.

Run:  .venv/bin/python -m bench.signal_hop [--joins 30] [--database-url postgresql+psycopg://...]

Starts Huizhen like bench/call_bench.py (gunicorn gevent worker, production config, demo data),
signs in the demo specialist and rural doctor through the login form, connects one python-socketio
client each to /call, and has the specialist wait in the call. Then, --joins times: the rural
doctor joins with an SDP offer (timed from the emit to the offer arriving at the specialist, and
to the join's ack), sends 5 ICE candidates (each timed from the emit to its arrival at the
specialist) and leaves. Both clients run on this machine, so the times are the server's work plus
two loopback hops, without any browser.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import socketio

from bench.call_bench import _start_server

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0}


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


def measure(joins: int, port: int, database_url: str | None) -> dict[str, list[float]]:
    """Join/leave `joins` times; return ms for offer arrival, join ack and candidate arrival."""
    with tempfile.TemporaryDirectory() as tmp:
        server = _start_server(port, Path(tmp), database_url, "gevent")
        base = f"http://127.0.0.1:{port}"
        try:
            spec_http, rural_http = _signed_in(base, "specialist@demo.test"), _signed_in(base, "rural@demo.test")
            home = spec_http.get(f"{base}/", timeout=10).text  # the booked consult, from "Upcoming"
            ref = re.search(r'<ul class="timeline">.*?href="/consults/([^"/]+)"', home, re.S).group(1)
            spec, rural = _client(base, spec_http), _client(base, rural_http)
            arrived, at = threading.Event(), [0.0]

            @spec.on("signal", namespace="/call")
            def _signal(_msg) -> None:
                at[0] = time.perf_counter()
                arrived.set()

            assert spec.call("join", {"ref": ref}, namespace="/call")["ok"]
            out: dict[str, list[float]] = {"offer at peer": [], "join ack": [], "candidate at peer": []}
            for _ in range(joins):
                arrived.clear()
                t0 = time.perf_counter()
                ack = rural.call("join", {"ref": ref, "offer": OFFER}, namespace="/call")
                t1 = time.perf_counter()
                assert ack["ok"] and arrived.wait(5), ack
                out["offer at peer"].append((at[0] - t0) * 1000)
                out["join ack"].append((t1 - t0) * 1000)
                for _ in range(5):
                    arrived.clear()
                    t0 = time.perf_counter()
                    rural.emit("signal", {"ref": ref, "type": "candidate", "candidate": CANDIDATE}, namespace="/call")
                    assert arrived.wait(5)
                    out["candidate at peer"].append((at[0] - t0) * 1000)
                assert rural.call("leave", {"ref": ref}, namespace="/call")["ok"]
            spec.disconnect()
            rural.disconnect()
            return out
        finally:
            server.terminate()
            server.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--joins", type=int, default=30)
    parser.add_argument("--port", type=int, default=5093)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite")
    args = parser.parse_args(argv)
    results = measure(args.joins, args.port, args.database_url)
    print(f"database: {'PostgreSQL' if args.database_url else 'SQLite'}; server: gunicorn gevent worker")
    print("| measure | n | median ms | p90 ms |\n| --- | --- | --- | --- |")
    for name, values in results.items():
        print(f"| {name} | {len(values)} | {statistics.median(values):.1f} | {_p90(values):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
