"""Consult-room load on slow links: bytes, requests and time to usable, cold and warm, per profile.

Run:  .venv/bin/python -m bench.room_load [--runs 3] [--server flask|gevent] [--out docs/benchmarks.md]

The demo specialist signs in (unthrottled), then the room of the booked consult is opened in
headless Chromium under each network profile, emulated with the DevTools protocol
(``Network.emulateNetworkConditions``: a minimum latency per request and a download/upload
throughput cap). It cannot drop packets, so the profiles' loss is NOT emulated here (the numbers
are for a loss-free link of that speed and round trip; loss adds retransmissions on top). Its
latency applies per HTTP request, not per TCP round trip (no slow start, no handshake cost).

- cold: the browser cache is emptied (``Network.clearBrowserCache``) before the room is opened;
- warm: the same room is opened again in the same context (a returning visit, cache kept).

"Usable" is when the chat has joined its room (messages shown, the box can send) and the call's
signaling socket is connected ("Join call" works); ``performance.now()`` at that moment, i.e. from
the start of the navigation. Bytes are what went over the network (``encodedDataLength``: headers
and compressed bodies; WebSocket frames are not counted) up to usable, and after the page settled
(2 s without a request). Requests: those that went to the network (cache hits not counted).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from playwright.sync_api import sync_playwright

from bench.call_bench import ARGS, CHROMIUM, _start_server

# name: (round-trip latency ms, throughput kbit/s, loss % — not emulated, see the docstring)
PROFILES: dict[str, tuple[int, int, float]] = {
    "good": (0, 0, 0.0),
    "rural": (150, 512, 1.0),
    "poor": (300, 128, 3.0),
    "audio": (300, 64, 5.0),
}
USABLE_JS = """() => (window.huizhenRoom && window.huizhenRoom.state().joined && window.huizhenCall
  && window.huizhenCall.socket.connected) ? performance.now() : false"""


class Traffic:
    """Network requests and bytes of one page, from the DevTools protocol."""

    def __init__(self, cdp) -> None:
        self.bytes = 0
        self.requests: dict[str, str] = {}
        self.cached: set[str] = set()
        self.urls: list[tuple[str, int]] = []
        self.last_event = time.monotonic()
        cdp.on("Network.requestWillBeSent", self._sent)
        cdp.on("Network.requestServedFromCache", lambda e: self.cached.add(e["requestId"]))
        cdp.on("Network.responseReceived", self._response)
        cdp.on("Network.loadingFinished", self._finished)

    def _sent(self, e) -> None:
        self.requests[e["requestId"]] = e["request"]["url"]
        self.last_event = time.monotonic()

    def _response(self, e) -> None:
        r = e["response"]
        if r.get("fromDiskCache") or r.get("fromPrefetchCache"):
            self.cached.add(e["requestId"])

    def _finished(self, e) -> None:
        self.last_event = time.monotonic()
        if e["requestId"] in self.cached:
            return
        size = int(e.get("encodedDataLength", 0))
        self.bytes += size
        self.urls.append((self.requests.get(e["requestId"], "?"), size))

    def network_requests(self) -> int:
        return len([r for r in self.requests if r not in self.cached])


VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


def _signed_in(browser, base: str, viewport: dict):
    """A fresh context (empty cache) with the demo specialist signed in, unthrottled."""
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(120000)
    page = context.new_page()
    page.goto(f"{base}/login")
    page.fill("#email", "specialist@demo.test")
    page.fill("#password", "huizhen-demo")
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "/login" not in u)
    return context, page


def _open_room(context, room: str, profile: str, cold: bool) -> dict:
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    if cold:
        cdp.send("Network.clearBrowserCache")
    latency, kbit, _loss = PROFILES[profile]
    if kbit:
        rate = kbit * 1000 / 8  # bytes per second
        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": latency,
                                                      "downloadThroughput": rate, "uploadThroughput": rate})
    traffic = Traffic(cdp)
    page.goto(room, wait_until="commit")
    usable = page.wait_for_function(USABLE_JS, timeout=120000, polling=20).json_value()
    at_usable = {"bytes": traffic.bytes, "requests": traffic.network_requests()}
    deadline = time.monotonic() + 60
    while time.monotonic() - traffic.last_event < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(200)  # (not time.sleep: Playwright delivers the CDP events while waiting)
    result = {"usable_ms": round(usable), "bytes_usable": at_usable["bytes"], "requests_usable": at_usable["requests"],
              "bytes_settled": traffic.bytes, "requests_settled": traffic.network_requests(),
              "urls": traffic.urls}
    cdp.detach()
    page.close()
    return result


def measure(runs: int, port: int, server: str, profiles: list[str], viewport: dict) -> dict[str, dict[str, list]]:
    """Open the room cold then warm `runs` times per profile; every result by profile and visit."""
    results: dict[str, dict[str, list]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc = _start_server(port, Path(tmp), None, server)
        base = f"http://127.0.0.1:{port}"
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                ctx, page = _signed_in(browser, base, viewport)
                page.goto(f"{base}/")  # the booked consult, from "Upcoming consultations"
                link = page.locator(".timeline a[href^='/consults/']").first.get_attribute("href")
                room = f"{base}{link}/room"
                ctx.close()
                for profile in profiles:
                    results[profile] = {"cold": [], "warm": []}
                    for _ in range(runs):
                        context, first = _signed_in(browser, base, viewport)
                        first.close()
                        results[profile]["cold"].append(_open_room(context, room, profile, cold=True))
                        results[profile]["warm"].append(_open_room(context, room, profile, cold=False))
                        context.close()
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return results


def _table(results: dict[str, dict[str, list]]) -> list[str]:
    lines = ["| profile | visit | requests to usable | KB to usable | usable (ms, median / max) "
             "| requests settled | KB settled |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for profile, visits in results.items():
        for visit, rows in visits.items():
            times = [r["usable_ms"] for r in rows]
            lines.append(
                f"| {profile} | {visit} | {statistics.median(r['requests_usable'] for r in rows):.0f} "
                f"| {statistics.median(r['bytes_usable'] for r in rows) / 1024:.1f} "
                f"| {statistics.median(times):.0f} / {max(times)} "
                f"| {statistics.median(r['requests_settled'] for r in rows):.0f} "
                f"| {statistics.median(r['bytes_settled'] for r in rows) / 1024:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=5079)
    parser.add_argument("--server", choices=("gevent", "flask"), default="gevent",
                        help="gevent: gunicorn -k gevent, production config (default); flask: `make run`'s server")
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--viewport", choices=tuple(VIEWPORTS), default="desktop")
    parser.add_argument("--urls", action="store_true", help="print every request of the last cold and warm load")
    parser.add_argument("--out", type=Path, default=None, help="append the results as Markdown to this file")
    args = parser.parse_args(argv)
    results = measure(args.runs, args.port, args.server, args.profiles.split(","), VIEWPORTS[args.viewport])
    lines = [f"Room load, {args.server} server, {args.viewport} viewport, {args.runs} run(s) per profile, "
             f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()} ({os.cpu_count()} CPUs, "
             f"load average {os.getloadavg()[0]:.1f})", "", *_table(results)]
    print("\n".join(lines))
    if args.urls:
        last = next(iter(results.values()))
        for visit in ("cold", "warm"):
            print(f"\n{visit}:")
            for url, size in last[visit][-1]["urls"]:
                print(f"  {size:>7}  {url}")
    if args.out:
        with args.out.open("a") as fh:
            fh.write("\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
