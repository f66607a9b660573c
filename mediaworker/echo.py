"""The pre-call echo: a server-side WebRTC peer that sends each user's camera and microphone back."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

log = logging.getLogger("mediaworker")
MAX_SDP_BYTES = 64 * 1024


class QuotaExceeded(Exception):
    """This user already has as many live echo sessions as the web app allows one user."""


@dataclass
class EchoSessions:
    """The live echo peers, bounded in number, per user and in lifetime."""

    max_sessions: int = 20
    max_seconds: float = 120.0
    max_per_user: int = 2  # the web app sends its own PRECALL_SESSIONS_PER_USER with each offer
    peers: set[RTCPeerConnection] = field(default_factory=set)
    owners: dict[RTCPeerConnection, str] = field(default_factory=dict)
    relay: MediaRelay = field(default_factory=MediaRelay)

    def of_user(self, user: str) -> int:
        """How many live echo peers this user has."""
        return sum(1 for owner in self.owners.values() if owner == user)

    def admit(self, user: str, per_user: int) -> None:
        """Refuse a new peer when the worker or this user is at the limit (checked and taken at once)."""
        if len(self.peers) >= self.max_sessions:
            raise OverflowError("too many echo sessions")
        if self.of_user(user) >= per_user:
            raise QuotaExceeded(f"this user already has {per_user} echo sessions")

    def add(self, pc: RTCPeerConnection, user: str) -> None:
        self.peers.add(pc)
        self.owners[pc] = user

    def discard(self, pc: RTCPeerConnection) -> None:
        self.peers.discard(pc)
        self.owners.pop(pc, None)

    async def close_all(self) -> None:
        await asyncio.gather(*(pc.close() for pc in list(self.peers)), return_exceptions=True)
        self.peers.clear()
        self.owners.clear()


def _ice_servers(raw: Any) -> list[RTCIceServer]:
    """Huizhen's own ICE servers for this user; aiortc's default public STUN is never used."""
    if not isinstance(raw, list):
        raise ValueError("ice_servers must be a list")
    servers = []
    for item in raw[:4]:
        if not isinstance(item, dict) or "urls" not in item:
            raise ValueError("each ICE server needs urls")
        servers.append(RTCIceServer(urls=item["urls"], username=item.get("username"),
                                    credential=item.get("credential")))
    return servers


async def _expire(sessions: EchoSessions, pc: RTCPeerConnection) -> None:
    await asyncio.sleep(sessions.max_seconds)
    sessions.discard(pc)
    await pc.close()


def _owner(offer: dict[str, Any], sessions: EchoSessions) -> tuple[str, int]:
    """The user an offer is for and that user's session limit, as the web app sent them."""
    user, per_user = offer.get("user"), offer.get("max_per_user", sessions.max_per_user)
    if not isinstance(user, str) or not 0 < len(user) <= 64:
        raise ValueError("expected the user the offer is for")
    if not isinstance(per_user, int) or isinstance(per_user, bool) or per_user < 1:
        raise ValueError("max_per_user must be a positive number")
    return user, per_user


async def answer_echo(sessions: EchoSessions, offer: dict[str, Any]) -> dict[str, str]:
    """Accept a browser's offer and return an answer whose tracks echo the browser's own."""
    sdp, kind = offer.get("sdp"), offer.get("type")
    if kind != "offer" or not isinstance(sdp, str) or not sdp.startswith("v=0") or len(sdp) > MAX_SDP_BYTES:
        raise ValueError("expected an SDP offer")
    user, per_user = _owner(offer, sessions)
    sessions.admit(user, per_user)
    config = RTCConfiguration(iceServers=_ice_servers(offer.get("ice_servers", [])))
    pc = RTCPeerConnection(config)
    sessions.add(pc, user)
    started = time.monotonic()

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        log.info("echo peer %s: %s after %.0f ms", id(pc), pc.connectionState, (time.monotonic() - started) * 1000)
        if pc.connectionState in ("failed", "closed"):
            sessions.discard(pc)
            await pc.close()

    @pc.on("track")
    def on_track(track) -> None:
        pc.addTrack(sessions.relay.subscribe(track))

    @pc.on("datachannel")
    def on_datachannel(channel) -> None:
        # The browser measures round-trip time with pings; echo them untouched.
        channel.on("message", lambda message: channel.send(message))

    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())  # aiortc gathers every candidate here
    except Exception:
        sessions.discard(pc)
        await pc.close()
        raise
    asyncio.get_running_loop().create_task(_expire(sessions, pc))
    return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}


def build_app(token: str, sessions: EchoSessions | None = None) -> web.Application:
    """The worker's local HTTP API (bound to loopback; every call carries the shared token)."""
    sessions = sessions or EchoSessions()
    app = web.Application(client_max_size=MAX_SDP_BYTES * 2)

    def authorised(request: web.Request) -> bool:
        return bool(token) and hmac.compare_digest(request.headers.get("X-Worker-Token", ""), token)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "sessions": len(sessions.peers)})

    async def echo_offer(request: web.Request) -> web.Response:
        if not authorised(request):
            return web.json_response({"error": "forbidden"}, status=403)
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            answer = await answer_echo(sessions, body)
        except (ValueError, json.JSONDecodeError) as exc:
            return web.json_response({"error": "bad_offer", "message": str(exc)}, status=400)
        except QuotaExceeded as exc:
            return web.json_response({"error": "quota", "message": str(exc)}, status=429)
        except OverflowError as exc:
            return web.json_response({"error": "busy", "message": str(exc)}, status=503)
        return web.json_response(answer)

    async def on_shutdown(app: web.Application) -> None:
        await sessions.close_all()

    app.router.add_get("/health", health)
    app.router.add_post("/echo/offer", echo_offer)
    app.on_shutdown.append(on_shutdown)
    return app
