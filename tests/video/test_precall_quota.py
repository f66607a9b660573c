"""The pre-call echo has a per-user quota and never holds a transaction while the media worker works
(issue #8, item 7). The real media worker answers real aiortc offers."""

from __future__ import annotations

import asyncio
import re
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiortc import RTCPeerConnection

from tests.conftest import Factory, LiveServer, build_app, csrf_token, http_session, login
from tests.video.media import run_async
from webapp.extensions import db


def _use_worker(monkeypatch: pytest.MonkeyPatch, app, worker) -> None:
    for key, value in {"MEDIA_WORKER_URL": worker.url, "MEDIA_WORKER_TOKEN": worker.token,
                       "TURN_URLS": [], "TURN_SECRET": "", "STUN_URLS": []}.items():
        monkeypatch.setitem(app.config, key, value)


async def _offers(count: int) -> tuple[list[RTCPeerConnection], list[dict[str, str]]]:
    """Real offers from aiortc peers (kept open by the caller while the worker answers them)."""
    pcs, offers = [], []
    for _ in range(count):
        pc = RTCPeerConnection()  # no ICE servers: host candidates only
        pc.createDataChannel("rtt")
        await pc.setLocalDescription(await pc.createOffer())
        pcs.append(pc)
        offers.append({"type": "offer", "sdp": pc.localDescription.sdp})
    return pcs, offers


def test_one_user_cannot_take_every_echo_session(app, make, fresh_media_worker, monkeypatch):
    _use_worker(monkeypatch, app, fresh_media_worker)
    monkeypatch.setitem(app.config, "PRECALL_SESSIONS_PER_USER", 2)
    posters = []
    for user in (make.rural(), make.specialist()):
        client = app.test_client()
        login(client, user)
        token = csrf_token(client, "/precall")

        def post(offer: dict, client=client, token=token) -> tuple[int, dict]:
            r = client.post("/precall/offer", json=offer, headers={"X-CSRFToken": token, "Accept": "application/json"})
            return r.status_code, r.get_json()
        posters.append(post)
    hog, other = posters

    async def run() -> list[tuple[int, dict]]:
        pcs, offers = await _offers(4)
        try:
            loop = asyncio.get_running_loop()
            return [await loop.run_in_executor(None, post, offer)
                    for post, offer in zip((hog, hog, hog, other), offers, strict=True)]
        finally:
            await asyncio.gather(*(pc.close() for pc in pcs))

    (s1, a1), (s2, a2), (s3, refused), (s4, a4) = run_async(run())
    assert (s1, s2) == (200, 200), (a1, a2)
    assert a1["type"] == a2["type"] == "answer"
    assert s3 == 429, refused
    assert refused == {"error": "too_many_precall_tests",
                       "message": "You already have 2 connection tests running. Close the other pre-call "
                                  "check tabs or wait a minute, then try again."}
    assert s4 == 200 and a4["type"] == "answer", a4  # the next doctor is not locked out


@pytest.fixture
def sqlite_server(tmp_path, fresh_media_worker):
    """Huizhen on its own SQLite file (whatever TEST_DATABASE_URL says), served by threads, with a
    STUN server that does not answer (down, or its packets dropped): the media worker then takes
    seconds to gather candidates, as it does on a slow network."""
    path = tmp_path / "precall.db"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent_stun:
        silent_stun.bind(("127.0.0.1", 0))
        sqlite_app = build_app(f"sqlite:///{path}", tmp_path, MEDIA_WORKER_URL=fresh_media_worker.url,
                               MEDIA_WORKER_TOKEN=fresh_media_worker.token, TURN_URLS=[], TURN_SECRET="",
                               STUN_URLS=[f"stun:127.0.0.1:{silent_stun.getsockname()[1]}"],
                               PRECALL_SESSIONS_PER_USER=2)
        with sqlite_app.app_context():
            server = LiveServer(sqlite_app).start()
            try:
                yield sqlite_app, server, path
            finally:
                server.stop()
                db.session.remove()


def test_concurrent_precall_requests_on_sqlite_never_wait_on_the_write_lock(sqlite_server):
    _, server, path = sqlite_server
    make = Factory()
    users = [make.rural() if n % 2 else make.specialist() for n in range(6)]
    sessions = []
    for user in users:
        session = http_session(server.url, user.email)
        token = re.search(r'data-csrf="([^"]+)"', session.get(f"{server.url}/precall", timeout=30).text).group(1)
        sessions.append((session, token))

    locked: list[str] = []
    done = threading.Event()

    def probe() -> None:
        """Another writer, meanwhile: it must get the write lock within a second, every time."""
        while not done.is_set():
            conn = sqlite3.connect(path, timeout=1.0, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            except sqlite3.OperationalError as exc:
                locked.append(str(exc))
            finally:
                conn.close()
            time.sleep(0.02)

    def post(n: int, offer: dict) -> tuple[int, str]:
        session, token = sessions[n % len(sessions)]
        r = session.post(f"{server.url}/precall/offer", json=offer,
                         headers={"X-CSRFToken": token, "Accept": "application/json"}, timeout=60)
        return r.status_code, f"{r.elapsed.total_seconds():.1f} s {r.text[:160]}"

    async def run() -> list[tuple[int, str]]:
        pcs, offers = await _offers(3 * len(sessions))  # three each: one over the quota of two
        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        try:
            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(max_workers=len(offers)) as pool:
                return list(await asyncio.gather(*(loop.run_in_executor(pool, post, n, offer)
                                                   for n, offer in enumerate(offers))))
        finally:
            done.set()
            prober.join(timeout=10)
            await asyncio.gather(*(pc.close() for pc in pcs))

    started = time.monotonic()
    results = run_async(run())
    print(f"{len(results)} pre-call requests in {time.monotonic() - started:.1f} s: {results}")
    statuses = sorted(status for status, _ in results)
    assert all(status in (200, 429) for status in statuses), results
    assert statuses.count(200) == 2 * len(sessions) and statuses.count(429) == len(sessions), results
    assert not locked, f"a request held the SQLite write lock while the media worker worked: {locked[:3]}"
