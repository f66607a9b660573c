"""Fixtures for browser tests on a shaped network (tests/netharness.py, docs/network-harness.md)."""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from tests.conftest import CHROMIUM_ARGS, PASSWORD, Factory, require
from tests.netharness import SIDES, NetHarness, missing_components
from webapp.extensions import socketio
from webapp.realtime import CONNECTIONS_KEY


@pytest.fixture(scope="module")
def netharness(browser) -> Iterator[SimpleNamespace]:
    """The module's namespaces, coturn, relays and two Chromiums (one per browser namespace).

    The browsers are launched through the session's Playwright (``browser.browser_type``); every
    test starts on the `good` profile without NAT (the `net_call` fixture resets it).
    """
    missing = missing_components()
    require(not missing, "the network harness needs " + ", ".join(missing))
    harness = NetHarness()
    atexit.register(harness.stop)  # a last resort: the namespaces must not outlive the run
    try:
        harness.start()
        browsers = {side: harness.launch(browser.browser_type, side, CHROMIUM_ARGS) for side in ("a", "b")}
        yield SimpleNamespace(harness=harness, browsers=browsers)
    finally:
        harness.stop()
        atexit.unregister(harness.stop)


def collecting_errors(page):
    """The page, with page.errors listing its uncaught script errors and console errors (failed
    resource loads left out: a test that provokes a 4xx expects the browser to log it)."""
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and "Failed to load resource" not in msg.text
            and page.errors.append(msg.text))
    return page


def signed_in(browser, base: str, email: str, width: int = 1280, height: int = 900):
    """A new context of the browser, at that viewport, with a page signed in through the form."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.goto(f"{base}/login", timeout=60000)
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url, timeout=60000)
    return context, page


@pytest.fixture
def net_call(app, netharness, monkeypatch) -> Iterator[SimpleNamespace]:
    """Huizhen served in the server namespace with coturn as its TURN server; a booked consult whose
    rural doctor is signed in in browser `a` and specialist in browser `b` (profile `good`).

    ``net_call.start(profile, nat=False, relay=False)`` shapes the links (set FORCE_TURN_RELAY with
    relay=True, as delay and jitter exist only on the relay path) — call it before opening the room.
    """
    harness: NetHarness = netharness.harness
    harness.apply("good", nat=False)
    for side, (addr, _gw) in SIDES.items():
        harness.move(side, addr)  # a test that moved a browser leaves it on its own address
        harness.link_up(side)
        harness.relays[side].clients.clear()
    base = harness.serve(app)
    monkeypatch.setitem(app.config, "ALLOWED_ORIGINS", [*app.config["ALLOWED_ORIGINS"], base])
    monkeypatch.setitem(app.config, "TURN_URLS", [harness.turn_url])
    monkeypatch.setitem(app.config, "TURN_SECRET", harness.turn_secret)
    monkeypatch.setitem(app.config, "STUN_URLS", [])
    monkeypatch.setitem(app.config, "FORCE_TURN_RELAY", False)
    make = Factory()
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    contexts = []
    try:
        ctx_a, page_a = signed_in(netharness.browsers["a"], base, rural.email)
        contexts.append(ctx_a)
        ctx_b, page_b = signed_in(netharness.browsers["b"], base, specialist.email)
        contexts.append(ctx_b)

        def start(profile: str = "good", *, nat: bool = False, relay: bool = False) -> None:
            app.config["FORCE_TURN_RELAY"] = relay
            harness.apply(profile, nat=nat)

        yield SimpleNamespace(harness=harness, base=base, consult=consult, rural=rural, specialist=specialist,
                              room=f"{base}/consults/{consult.ref}/room", page_a=page_a, page_b=page_b,
                              start=start)
    finally:
        for ctx in contexts:
            ctx.close()
        harness.stop_servers()
        _forget_connections(app)
        harness.apply("good", nat=False)


def _forget_connections(app) -> None:
    """Disconnect the sockets the server still holds after the browsers closed theirs: one whose
    browser moved to another address is dead but stays registered until its ping timeout (45 s),
    and would sit in the next test's call (consult ids are reused between tests)."""
    for namespace, table in list(app.extensions.get(CONNECTIONS_KEY, {}).items()):
        for members in table.local_rooms().values():
            for sid, _user, _name in members:
                with contextlib.suppress(Exception):
                    socketio.server.disconnect(sid, namespace=namespace)
