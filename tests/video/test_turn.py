"""TURN: credentials issued by Huizhen are accepted by a real coturn; expired or forged ones are refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time

import pytest
from aioice import turn
from aioice.stun import TransactionFailed
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from tests.video.media import run_async
from webapp.video import services


@pytest.fixture
def turn_app(app, coturn):
    app.config.update(TURN_URLS=[coturn.url], TURN_SECRET=coturn.secret, TURN_TTL_SECONDS=3600, STUN_URLS=[])
    yield app
    app.config.update(TURN_URLS=[], TURN_SECRET="")


async def _allocate(port: int, username: str, password: str) -> tuple[str, int]:
    transport, _ = await turn.create_turn_endpoint(
        asyncio.DatagramProtocol, server_addr=("127.0.0.1", port), username=username, password=password,
        lifetime=60,
    )
    try:
        return transport.get_extra_info("sockname")
    finally:
        transport.close()


def test_credentials_follow_the_turn_rest_scheme(turn_app, make):
    user = make.rural()
    creds = services.turn_credentials(user, now=1_800_000_000)
    assert creds["username"] == f"{1_800_000_000 + 3600}:{user.id}"
    expected = base64.b64encode(hmac.new(turn_app.config["TURN_SECRET"].encode(),
                                         creds["username"].encode(), hashlib.sha1).digest()).decode()
    assert creds["credential"] == expected
    servers = services.ice_servers(user)
    assert len(servers) == 1 and servers[0]["urls"] == turn_app.config["TURN_URLS"]
    expiry, user_id = servers[0]["username"].split(":")
    assert user_id == str(user.id) and abs(int(expiry) - (time.time() + 3600)) < 5
    assert servers[0]["credential"] == base64.b64encode(hmac.new(
        turn_app.config["TURN_SECRET"].encode(), servers[0]["username"].encode(), hashlib.sha1).digest()).decode()
    assert turn_app.config["TURN_SECRET"] not in repr(servers)


def test_no_ice_servers_and_no_public_stun_when_unconfigured(app, make):
    app.config.update(TURN_URLS=[], TURN_SECRET="", STUN_URLS=[])
    assert services.ice_servers(make.rural()) == []


def test_coturn_accepts_huizhen_credentials(turn_app, coturn, make):
    creds = services.turn_credentials(make.rural())
    host, port = run_async(_allocate(coturn.port, creds["username"], creds["credential"]))
    assert host == "127.0.0.1" and port > 0


def test_coturn_refuses_expired_credentials(turn_app, coturn, make):
    creds = services.turn_credentials(make.rural(), now=time.time() - 2 * 3600)
    with pytest.raises(TransactionFailed):
        run_async(_allocate(coturn.port, creds["username"], creds["credential"]))


def test_coturn_refuses_forged_credentials(turn_app, coturn, make):
    user = make.rural()
    creds = services.turn_credentials(user)
    forged = base64.b64encode(hmac.new(b"not-the-secret", creds["username"].encode(), hashlib.sha1).digest()).decode()
    with pytest.raises(TransactionFailed):
        run_async(_allocate(coturn.port, creds["username"], forged))
    other_user = f"{creds['username'].split(':')[0]}:{user.id + 1}"  # someone else's name, my password
    with pytest.raises(TransactionFailed):
        run_async(_allocate(coturn.port, other_user, creds["credential"]))


def test_two_peers_forced_to_relay_connect_through_coturn(turn_app, coturn, make):
    a_user, b_user = make.rural(), make.specialist()

    servers_of = {u.id: services.ice_servers(u) for u in (a_user, b_user)}  # issued by Huizhen

    def config(user) -> RTCConfiguration:
        servers = [RTCIceServer(urls=s["urls"], username=s["username"], credential=s["credential"])
                   for s in servers_of[user.id]]
        return RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY)

    async def run() -> tuple[str, str]:
        a, b = RTCPeerConnection(config(a_user)), RTCPeerConnection(config(b_user))
        received = asyncio.get_running_loop().create_future()
        channel = a.createDataChannel("probe")

        @b.on("datachannel")
        def on_channel(ch):
            ch.on("message", lambda msg: received.done() or received.set_result(msg))

        channel.on("open", lambda: channel.send("through the relay"))
        try:
            await a.setLocalDescription(await a.createOffer())
            await b.setRemoteDescription(a.localDescription)
            await b.setLocalDescription(await b.createAnswer())
            await a.setRemoteDescription(b.localDescription)
            message = await asyncio.wait_for(received, 20)
            pair = a.sctp.transport.transport.iceGatherer  # the local candidates are relayed ones only
            kinds = {c.type for c in pair.getLocalCandidates()}
            return message, ",".join(sorted(kinds))
        finally:
            await a.close()
            await b.close()

    message, kinds = run_async(run())
    assert message == "through the relay"
    assert kinds == "relay"
