"""Presence and call setup across two nodes, against one node, on the multi-node test cluster.

Run:  .venv/bin/python -m bench.presence_bench [--runs 15] [--call-runs 8] [--kills 2] [--ttl 15]

Starts the cluster of tests/cluster.py (two gunicorn/gevent nodes, nginx, a PostgreSQL and a Redis
of its own, on loopback) with the demo data, and measures, each on one node and across two:

- presence: one doctor's python-socketio client sits in the consult room on node 0; the other's
  joins on node 0 (one node) or node 1 (two nodes). The time from the join emitted to the first
  doctor's client being pushed a people list that names the second; then the second disconnects
  and the time until a list without them arrives.
- call setup: the specialist waits in the call on node 0 in headless Chromium; the rural doctor's
  page, on node 0 or node 1, clicks "Join call"; the time from the click to the first decoded remote
  frame (as bench/call_bench.py), fresh joins on both sides every run.
- a killed node: the doctor on node 0 is in the room, node 0 gets SIGKILL; the time until the doctor
  on node 1 is pushed a people list without them (bounded by PRESENCE_TTL_SECONDS plus a heartbeat).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import requests
import socketio

from bench.call_bench import ARGS, CHROMIUM, _login
from tests.cluster import ROOT, Cluster, missing_components

NS = "/room"
PASSWORD = "huizhen-demo"


def _session(base: str, email: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{base}/login", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    session.post(f"{base}/login", data={"email": email, "password": PASSWORD, "csrf_token": token}, timeout=10)
    return session


class Watcher:
    """A client in the room that timestamps every people list it is pushed."""

    def __init__(self, base: str, email: str, ref: str) -> None:
        session = _session(base, email)
        self.lists: list[tuple[float, set[int]]] = []
        self.cond = threading.Condition()
        self.client = socketio.Client(reconnection=False)
        self.client.on("presence", self._on_presence, namespace=NS)
        self.client.connect(base, namespaces=[NS], transports=["websocket"], wait_timeout=10,
                            headers={"Cookie": "; ".join(f"{c.name}={c.value}" for c in session.cookies)})
        ack = self.client.call("join", {"ref": ref}, namespace=NS, timeout=15)
        self.me = ack["me"]

    def _on_presence(self, data: dict[str, Any]) -> None:
        with self.cond:
            self.lists.append((time.perf_counter(), {p["user_id"] for p in data["people"]}))
            self.cond.notify_all()

    def wait(self, predicate, since: float, timeout: float = 60) -> float:
        """Seconds from `since` to the first list after it that satisfies predicate."""
        def hit():
            return next((t for t, ids in self.lists if t >= since and predicate(ids)), None)
        with self.cond:
            if not self.cond.wait_for(lambda: hit() is not None, timeout=timeout):
                raise TimeoutError("no such people list")
            return hit() - since  # type: ignore[operator]

    def close(self) -> None:
        self.client.disconnect()


def presence_runs(cluster: Cluster, ref: str, runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"join one node": [], "join two nodes": [], "leave one node": [],
                                   "leave two nodes": []}
    watcher = Watcher(cluster.node_url(0), "specialist@demo.test", ref)
    try:
        for _ in range(runs):
            for node, label in ((0, "one node"), (1, "two nodes")):
                session = _session(cluster.node_url(node), "rural@demo.test")
                client = socketio.Client(reconnection=False)
                client.connect(cluster.node_url(node), namespaces=[NS], transports=["websocket"], wait_timeout=10,
                               headers={"Cookie": "; ".join(f"{c.name}={c.value}" for c in session.cookies)})
                t0 = time.perf_counter()
                ack = client.call("join", {"ref": ref}, namespace=NS, timeout=15)
                rural = ack["me"]
                out[f"join {label}"].append(watcher.wait(lambda ids, r=rural: r in ids, t0) * 1000)
                t1 = time.perf_counter()
                client.disconnect()
                out[f"leave {label}"].append(watcher.wait(lambda ids, r=rural: r not in ids, t1) * 1000)
    finally:
        watcher.close()
    return out


def call_runs(cluster: Cluster, ref: str, runs: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {"call one node": [], "call two nodes": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx_s, spec = _login(browser, cluster.node_url(0), "specialist@demo.test")
        pages = {0: _login(browser, cluster.node_url(0), "rural@demo.test"),
                 1: _login(browser, cluster.node_url(1), "rural@demo.test")}
        spec.goto(f"{cluster.node_url(0)}/consults/{ref}/room")
        for _ in range(runs):
            for node, label in ((0, "call one node"), (1, "call two nodes")):
                spec.click("#call-join")
                spec.wait_for_function("() => document.getElementById('call-status').textContent.includes('Waiting')")
                rural = pages[node][1]
                rural.goto(f"{cluster.node_url(node)}/consults/{ref}/room")
                rural.bring_to_front()
                rural.wait_for_load_state("networkidle")
                rural.wait_for_function("() => window.huizhenCall.socket.connected"
                                        " && window.huizhenRoom.state().joined")
                rural.click("#call-join")
                rural.wait_for_function("() => window.huizhenCall.metrics.firstRemoteFrameMs !== null", timeout=60000)
                out[label].append(rural.evaluate("() => window.huizhenCall.metrics.firstRemoteFrameMs"))
                rural.click("#call-leave")
                spec.wait_for_function("() => document.getElementById('call-status').textContent.includes('left')")
                spec.click("#call-leave")
        for ctx, _ in pages.values():
            ctx.close()
        ctx_s.close()
        browser.close()
    return out


def kill_runs(cluster: Cluster, ref: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        watcher = Watcher(cluster.node_url(1), "specialist@demo.test", ref)
        victim = Watcher(cluster.node_url(0), "rural@demo.test", ref)
        try:
            watcher.wait(lambda ids, r=victim.me: r in ids, 0)
            t0 = time.perf_counter()
            cluster.kill9(0)
            out.append(watcher.wait(lambda ids, r=victim.me: r not in ids, t0, timeout=120) * 1000)
        finally:
            watcher.close()
            cluster.restart(0)
    return out


def _row(label: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"| {label} | {len(values)} | {statistics.median(values):.0f} | {p90:.0f} | {max(values):.0f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="presence joins and leaves per setting")
    parser.add_argument("--call-runs", type=int, default=8, help="browser calls per setting")
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs of node 0")
    parser.add_argument("--ttl", type=int, default=15, help="PRESENCE_TTL_SECONDS of the nodes")
    args = parser.parse_args(argv)
    missing = missing_components()
    if missing:
        print("the cluster needs " + ", ".join(missing), file=sys.stderr)
        return 2
    cluster = Cluster(env={"PRESENCE_TTL_SECONDS": str(args.ttl)}).start()
    try:
        subprocess.run([sys.executable, "-m", "flask", "seed-demo"], cwd=ROOT, env=cluster.env, check=True,
                       capture_output=True)
        from sqlalchemy import create_engine, text

        engine = create_engine(cluster.database_url)
        with engine.connect() as conn:  # the demo's booked consult
            ref = conn.execute(text("SELECT ref FROM consults WHERE lower(status::text) = 'scheduled'")).scalar_one()
        engine.dispose()
        results: dict[str, list[float]] = {}
        results.update(presence_runs(cluster, ref, args.runs))
        if args.call_runs:
            results.update(call_runs(cluster, ref, args.call_runs))
        if args.kills:
            results[f"node 0 killed: gone on node 1 (TTL {args.ttl} s)"] = kill_runs(cluster, ref, args.kills)
    finally:
        cluster.close()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| measured | runs | median ms | p90 ms | max ms |\n| --- | --- | --- | --- | --- |")
    for label, values in results.items():
        print(_row(label, values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
