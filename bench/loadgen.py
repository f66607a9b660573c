"""Load generator for the chat benchmark: asyncio python-socketio clients, two per consult room.

A worker process signs its participants in (GET /login for the CSRF token, POST /login, keep the
session cookie), connects them over WebSocket with that cookie and a browser-like Origin, joins
each to its room, then runs rate steps on command from the parent: every participant sends at a
fixed rate on an absolute schedule (open loop: a send never waits for the previous ack), with the
send time in the body; the peer records receive time minus send time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import socketio

NAMESPACE = "/room"
CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
BODY_PREFIX = "bench t="


@dataclass
class Room:
    index: int
    ref: str
    emails: tuple[str, str] | None  # None: the bare relay has no accounts


@dataclass
class Participant:
    room: Room
    who: str  # "a" or "b"
    client: socketio.AsyncClient
    cookie: str = ""
    # per step
    step: str = ""
    sent: int = 0
    peer_delivered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    ack_ms: list[float] = field(default_factory=list)
    ack_errors: Counter = field(default_factory=Counter)
    seen: set[str] = field(default_factory=set)
    duplicates: int = 0
    echoes: int = 0
    send_lag_ms: list[float] = field(default_factory=list)

    @property
    def peer(self) -> str:
        return "b" if self.who == "a" else "a"

    def reset(self, step: str) -> None:
        self.step = step
        self.sent = self.peer_delivered = self.duplicates = self.echoes = 0
        self.latencies_ms, self.ack_ms, self.send_lag_ms = [], [], []
        self.ack_errors = Counter()
        self.seen = set()

    def prefix(self, who: str) -> str:
        return f"{self.step}-{self.room.index}-{who}-"

    def on_message(self, data: Any) -> None:
        now = time.time_ns()
        if not isinstance(data, dict):
            return
        cid = data.get("client_id") or ""
        if cid.startswith(self.prefix(self.who)):
            self.echoes += 1
            return
        if not cid.startswith(self.prefix(self.peer)):
            return  # a straggler from an earlier step, or not ours
        if cid in self.seen:
            self.duplicates += 1
            return
        self.seen.add(cid)
        self.peer_delivered += 1
        body = data.get("body") or ""
        if body.startswith(BODY_PREFIX):
            self.latencies_ms.append((now - int(body[len(BODY_PREFIX):])) / 1e6)


async def login(http: aiohttp.ClientSession, base: str, email: str, password: str) -> str:
    """Sign in through the real form; returns the Cookie header for the socket."""
    async with http.get(f"{base}/login") as r:
        page = await r.text()
        cookie = r.cookies["session"].value
    token = CSRF_RE.search(page).group(1)
    async with http.post(f"{base}/login", data={"email": email, "password": password, "csrf_token": token},
                         headers={"Cookie": f"session={cookie}"}, allow_redirects=False) as r:
        if r.status != 302 or "session" not in r.cookies:
            raise RuntimeError(f"login of {email} failed: HTTP {r.status}")
        return f"session={r.cookies['session'].value}"


async def setup(cfg: dict[str, Any]) -> list[Participant]:
    base, origin = cfg["url"], cfg["origin"]
    rooms = [Room(i, ref, tuple(emails) if emails else None) for i, ref, emails in cfg["rooms"]]
    # On a cluster behind nginx (sticky by client address), each side connects from its own loopback
    # address so that every room spans both nodes: {"a": "127.0.0.x", "b": "127.0.0.y"}.
    local_addrs = cfg.get("local_addrs") or {}
    sessions = {who: aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(addr, 0), limit=0))
                for who, addr in local_addrs.items()}
    people = [Participant(room, who, socketio.AsyncClient(reconnection=False, http_session=sessions.get(who)))
              for room in rooms for who in ("a", "b")]
    cfg["_sessions"] = sessions  # closed by serve() at the end
    gate = asyncio.Semaphore(cfg.get("concurrency", 40))

    if cfg["login"]:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            async def sign_in(p: Participant) -> None:
                async with gate:
                    email = p.room.emails[0 if p.who == "a" else 1]
                    p.cookie = await login(http, base, email, cfg["password"])
            await asyncio.gather(*(sign_in(p) for p in people))

    async def connect(p: Participant) -> None:
        p.client.on("message", p.on_message, namespace=NAMESPACE)
        headers = {"Origin": origin}
        if p.cookie:
            headers["Cookie"] = p.cookie
        async with gate:
            await p.client.connect(base, headers=headers, transports=["websocket"], namespaces=[NAMESPACE],
                                   wait_timeout=60)
            ack = await p.client.call("join", {"ref": p.room.ref, "after_seq": 0}, namespace=NAMESPACE,
                                      timeout=60)
        if not ack or not ack.get("ok"):
            raise RuntimeError(f"join of room {p.room.index} refused: {ack}")

    await asyncio.gather(*(connect(p) for p in people))
    return people


async def first_messages(people: list[Participant], step: str) -> dict[str, Any]:
    """Each room's first message (from its 'a' side), acknowledged before any measured step starts."""
    started = time.perf_counter()

    async def first(p: Participant) -> bool:
        ack = await p.client.call("send", {"ref": p.room.ref, "client_id": f"{step}-first-{p.room.index}",
                                           "body": "first message"}, namespace=NAMESPACE, timeout=120)
        return isinstance(ack, dict) and bool(ack.get("ok"))

    done = await asyncio.gather(*(first(p) for p in people if p.who == "a"), return_exceptions=True)
    return {"rooms": len(done), "ok": sum(1 for d in done if d is True), "seconds": time.perf_counter() - started}


async def run_step(people: list[Participant], step: str, rate: float, duration: float, t0_wall: float,
                   drain: float, rate_range: tuple[float, float] | None = None) -> dict[str, Any]:
    """One open-loop step: every participant at `rate`, or each at its own rate drawn from `rate_range`."""
    loop = asyncio.get_running_loop()
    t0 = loop.time() + (t0_wall - time.time())
    for p in people:
        p.reset(step)

    async def sender(p: Participant) -> None:
        rate = random.uniform(*rate_range) if rate_range else default_rate
        phase = random.random() / rate
        k = 0
        while True:
            due = t0 + phase + k / rate
            if due >= t0 + duration:
                return
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            p.send_lag_ms.append(max(0.0, -delay) * 1000)
            sent_ns = time.time_ns()
            cid = f"{p.prefix(p.who)}{k}"

            def acked(data: Any = None, _sent_ns: int = sent_ns, _p: Participant = p) -> None:
                _p.ack_ms.append((time.time_ns() - _sent_ns) / 1e6)
                if not isinstance(data, dict) or not data.get("ok"):
                    _p.ack_errors[str(data.get("error") if isinstance(data, dict) else data)] += 1
                elif data.get("duplicate"):  # an idempotent replay is acked but not broadcast
                    _p.ack_errors["duplicate"] += 1

            try:
                await p.client.emit("send", {"ref": p.room.ref, "client_id": cid, "body": f"{BODY_PREFIX}{sent_ns}"},
                                    namespace=NAMESPACE, callback=acked)
                p.sent += 1
            except Exception as exc:  # a dropped connection: the message counts as sent and lost
                p.sent += 1
                p.ack_errors[f"emit failed: {type(exc).__name__}"] += 1
            k += 1

    default_rate = rate
    await asyncio.gather(*(sender(p) for p in people))
    by_room = {(p.room.index, p.who): p for p in people}
    deadline = loop.time() + drain
    while loop.time() < deadline:
        if all(p.peer_delivered >= by_room[(p.room.index, p.peer)].sent for p in people):
            break
        await asyncio.sleep(0.1)
    errors: Counter = Counter()
    for p in people:
        errors.update(p.ack_errors)
    return {
        "sent": sum(p.sent for p in people),
        "delivered": sum(p.peer_delivered for p in people),
        "acks": sum(len(p.ack_ms) for p in people),
        "ack_errors": dict(errors),
        "duplicates": sum(p.duplicates for p in people),
        "echoes": sum(p.echoes for p in people),
        "latencies_ms": [x for p in people for x in p.latencies_ms],
        "ack_ms": [x for p in people for x in p.ack_ms],
        "send_lag_ms": [x for p in people for x in p.send_lag_ms],
        "connected": sum(1 for p in people if p.client.connected),
    }


async def serve(conn, cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    try:
        people = await setup(cfg)
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", {"participants": len(people), "setup_s": time.perf_counter() - started}))
    try:
        while True:
            command, args = await loop.run_in_executor(None, conn.recv)
            if command == "step":
                conn.send(("result", await run_step(people, **args)))
            elif command == "first":
                conn.send(("result", await first_messages(people, **args)))
            else:
                break
    finally:
        for p in people:
            with contextlib.suppress(Exception):
                await p.client.disconnect()
        for http in cfg.get("_sessions", {}).values():
            await http.close()


def worker(conn, cfg: dict[str, Any]) -> None:
    """Entry point of a load-generator process (multiprocessing, spawn)."""
    asyncio.run(serve(conn, cfg))
