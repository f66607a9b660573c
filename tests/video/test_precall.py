"""The pre-call check: an aiortc peer in the separate media worker echoes the user's own media."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from tests.conftest import csrf_token, login
from tests.video.media import ColourTrack, collect_frames, mean_colour, run_async

RED = (220, 30, 30)


@pytest.fixture
def worker_app(app, media_worker):
    app.config.update(MEDIA_WORKER_URL=media_worker.url, MEDIA_WORKER_TOKEN=media_worker.token,
                      TURN_URLS=[], TURN_SECRET="", STUN_URLS=[])
    return app


def _offer_through_huizhen(client, token: str):
    def post(offer: dict) -> tuple[int, dict]:
        r = client.post("/precall/offer", json=offer, headers={"X-CSRFToken": token, "Accept": "application/json"})
        return r.status_code, r.get_json()
    return post


def test_precall_echo_returns_the_frames_it_was_sent(worker_app, client, make):
    login(client, make.rural())
    token = csrf_token(client, "/precall")
    post = _offer_through_huizhen(client, token)

    async def run() -> tuple[list, list]:
        pc = RTCPeerConnection()  # no ICE servers: host candidates only, nothing public
        pc.addTrack(ColourTrack(RED))
        channel = pc.createDataChannel("rtt")
        pongs: asyncio.Queue = asyncio.Queue()
        channel.on("message", pongs.put_nowait)
        echoed = asyncio.get_running_loop().create_future()
        pc.on("track", lambda track: echoed.done() or echoed.set_result(track))
        try:
            await pc.setLocalDescription(await pc.createOffer())
            status, answer = await asyncio.get_running_loop().run_in_executor(
                None, post, {"type": "offer", "sdp": pc.localDescription.sdp})
            assert status == 200, answer
            await pc.setRemoteDescription(RTCSessionDescription(**answer))
            track = await asyncio.wait_for(echoed, 15)
            frames = await collect_frames(track, 10)
            await asyncio.wait_for(_channel_open(channel), 10)
            channel.send("ping-1")
            pong = await asyncio.wait_for(pongs.get(), 10)
            return frames, [pong]
        finally:
            await pc.close()

    frames, pongs = run_async(run())
    assert len(frames) == 10
    r, g, b = mean_colour(frames[-1])
    assert r > 150 and g < 90 and b < 90, (r, g, b)  # our red came back through the server
    assert pongs == ["ping-1"]


async def _channel_open(channel) -> None:
    while channel.readyState != "open":
        await asyncio.sleep(0.05)


def test_precall_refuses_a_malformed_offer(worker_app, client, make):
    login(client, make.rural())
    token = csrf_token(client, "/precall")
    for bad in ({"type": "offer", "sdp": "not sdp"}, {"type": "answer", "sdp": "v=0\r\n"}, ["x"], None):
        r = client.post("/precall/offer", json=bad, headers={"X-CSRFToken": token, "Accept": "application/json"})
        assert r.status_code == 422, (bad, r.status_code)
        assert r.get_json()["message"]


def test_precall_reports_an_unreachable_worker_clearly(app, client, make):
    app.config.update(MEDIA_WORKER_URL="http://127.0.0.1:9", MEDIA_WORKER_TOKEN="x")
    login(client, make.rural())
    token = csrf_token(client, "/precall")
    r = client.post("/precall/offer", json={"type": "offer", "sdp": "v=0\r\n"},
                    headers={"X-CSRFToken": token, "Accept": "application/json"})
    assert r.status_code == 503
    assert r.get_json()["error"] == "media_worker_unavailable"


def test_worker_refuses_calls_without_its_token(worker_app, media_worker):
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(media_worker.url + "/echo/offer", data=json.dumps({"type": "offer"}).encode(),
                                 method="POST", headers={"X-Worker-Token": "wrong"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 403


def test_precall_needs_a_signed_in_user_and_csrf(worker_app, client, make):
    anonymous_token = csrf_token(client, "/login")
    r = client.post("/precall/offer", json={"type": "offer", "sdp": "v=0"}, headers={"X-CSRFToken": anonymous_token})
    assert r.status_code == 401 and r.get_json()["error"] == "unauthorized"  # JSON callers get 401
    login(client, make.rural())
    r = client.post("/precall/offer", json={"type": "offer", "sdp": "v=0"}, headers={"Accept": "application/json"})
    assert r.status_code == 400  # no CSRF token
