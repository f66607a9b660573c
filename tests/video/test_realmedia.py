"""Real media through Huizhen's own signaling: two aiortc peers, each behind a logged-in Socket.IO client."""

from __future__ import annotations

import asyncio

import socketio
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from tests.conftest import Factory, cookie_header, http_session
from tests.video.media import ColourTrack, collect_frames, mean_colour, run_async

RED, BLUE = (220, 30, 30), (30, 30, 220)


class Peer:
    """An aiortc peer that signals through Huizhen's /call namespace."""

    def __init__(self, base_url: str, email: str, colour: tuple[int, int, int]) -> None:
        self.base_url, self.email, self.colour = base_url, email, colour
        self.sio = socketio.AsyncClient(reconnection=False)
        self.remote_track: asyncio.Future = asyncio.get_running_loop().create_future()
        self.pc: RTCPeerConnection | None = None
        self.sio.on("signal", self._on_signal, namespace="/call")

    async def join(self, ref: str) -> dict:
        session = await asyncio.to_thread(http_session, self.base_url, self.email)
        await self.sio.connect(self.base_url, namespaces=["/call"], transports=["websocket"],
                               headers={"Cookie": cookie_header(session)}, wait_timeout=10)
        self.ref = ref
        ack = await self.sio.call("join", {"ref": ref}, namespace="/call", timeout=10)
        assert isinstance(ack, dict) and ack["ok"], ack
        servers = [RTCIceServer(**s) for s in ack["ice_servers"]]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))  # never aiortc's public STUN
        self.pc.addTrack(ColourTrack(self.colour))
        self.pc.on("track", lambda track: self.remote_track.done() or self.remote_track.set_result(track))
        return ack

    async def offer(self) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        ack = await self.sio.call("signal", {"ref": self.ref, "type": "offer", "sdp": self.pc.localDescription.sdp},
                                  namespace="/call", timeout=10)
        assert ack["ok"], ack

    async def _on_signal(self, message: dict) -> None:
        if message["type"] in ("offer", "answer"):
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=message["sdp"], type=message["type"]))
            if message["type"] == "offer":
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                await self.sio.emit("signal", {"ref": self.ref, "type": "answer", "sdp": self.pc.localDescription.sdp},
                                    namespace="/call")

    async def close(self) -> None:
        if self.pc:
            await self.pc.close()
        if self.sio.connected:
            await self.sio.disconnect()


def test_two_aiortc_peers_exchange_video_through_huizhen_signaling(app, live_server):
    make = Factory()
    rural, specialist = make.rural(), make.specialist()
    ref = make.scheduled(rural, specialist).ref
    app.config.update(TURN_URLS=[], TURN_SECRET="", STUN_URLS=[])
    rural_email, rural_id, specialist_email = rural.email, rural.id, specialist.email  # read before the thread

    async def run():
        a = Peer(live_server.url, rural_email, RED)
        b = Peer(live_server.url, specialist_email, BLUE)
        try:
            first = await a.join(ref)
            assert first["peers"] == [] and first["ice_servers"] == []
            second = await b.join(ref)
            assert second["peers"] == [rural_id]
            await b.offer()  # the later joiner offers, as the browser client does
            track_at_a = await asyncio.wait_for(a.remote_track, 20)
            track_at_b = await asyncio.wait_for(b.remote_track, 20)
            frames_at_a = await collect_frames(track_at_a, 8)
            frames_at_b = await collect_frames(track_at_b, 8)
            return mean_colour(frames_at_a[-1]), mean_colour(frames_at_b[-1])
        finally:
            await a.close()
            await b.close()

    seen_by_rural, seen_by_specialist = run_async(run())
    assert seen_by_rural[2] > 150 and seen_by_rural[0] < 90, seen_by_rural          # the specialist's blue
    assert seen_by_specialist[0] > 150 and seen_by_specialist[2] < 90, seen_by_specialist  # the rural red
