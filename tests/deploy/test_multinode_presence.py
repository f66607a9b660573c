"""Presence, typing, read receipts and call state across two nodes (issue 9 item 4).

Each party is pinned to a different gunicorn/gevent node of the multi-node harness (tests/cluster.py):
both see both in the room's people list, typing and read receipts cross, a /call join on one node
hands its offer to the party waiting on the other (python-socketio clients driving the protocol as
static/js/call.js does), a node killed with SIGKILL drops out of presence on the other node within the
presence TTL, and two Chromium pages on different nodes connect a call as fast as on one node.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import socketio as sio_client

from tests.conftest import cookie_header, http_session
from tests.rooms.test_realserver import NS, TIMEOUT, Peer

pytestmark = pytest.mark.cluster

PRESENCE_TTL = 3  # seconds: a killed node's connections must vanish within this (plus one heartbeat)
CLUSTER_ENV = {"CHAT_MESSAGES_PER_SECOND": "1000", "PRESENCE_TTL_SECONDS": str(PRESENCE_TTL)}
CALL = "/call"
OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
ANSWER = "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
# Join to first remote frame, the joining side, on one node and across two (docs/benchmarks.md: about
# 1.4 s on one node; before the fix a cross-node call needed an ICE restart, 18 s).
CALL_BOUND_MS = 6000


class CallPeer:
    """A python-socketio client's /call side, recording what the server pushes."""

    def __init__(self, client: sio_client.Client) -> None:
        self.client = client
        self.events: list[tuple[str, Any]] = []
        self.cond = threading.Condition()
        for name in ("peer-joined", "peer-left", "signal", "peer-state"):
            client.on(name, self._recorder(name), namespace=CALL)

    def _recorder(self, name: str):
        def record(data: Any) -> None:
            with self.cond:
                self.events.append((name, data))
                self.cond.notify_all()
        return record

    def call(self, event: str, data: Any) -> dict[str, Any]:
        return self.client.call(event, data, namespace=CALL, timeout=TIMEOUT)

    def wait_for(self, name: str, predicate=lambda data: True, timeout: float = TIMEOUT) -> Any:
        def found():
            return next((d for n, d in self.events if n == name and predicate(d)), None)
        with self.cond:
            assert self.cond.wait_for(lambda: found() is not None, timeout=timeout), f"no {name}: {self.events}"
            return found()


def on_node(cluster, i: int, email: str, namespaces: list[str]) -> sio_client.Client:
    """A signed-in python-socketio client connected straight to node i (no nginx), over a WebSocket."""
    session = http_session(cluster.node_url(i), email)
    client = sio_client.Client(reconnection=False)
    client.connect(cluster.node_url(i), namespaces=namespaces, transports=["websocket"],
                   headers={"Cookie": cookie_header(session)}, wait_timeout=10)
    return client


def people_ids(event: dict[str, Any]) -> list[int]:
    return sorted(p["user_id"] for p in event["people"])


def test_presence_typing_and_read_receipts_cross_nodes(cluster, parties):
    ref, (a_email, a_id), (b_email, b_id) = parties["ref"], parties["rural"], parties["specialist"]
    client_a = on_node(cluster, 0, a_email, [NS])
    client_b = on_node(cluster, 1, b_email, [NS])
    try:
        a, b = Peer(client_a, a_id), Peer(client_b, b_id)
        assert [p["user_id"] for p in a.join(ref)["people"]] == [a_id]
        ack_b = b.join(ref)
        assert sorted(p["user_id"] for p in ack_b["people"]) == [a_id, b_id], ack_b["people"]
        # The rural doctor's list (node 0) is the newest presence it was pushed: it must show both.
        a.wait_until(lambda: bool(a.events_named("presence")) and people_ids(a.events_named("presence")[-1])
                     == [a_id, b_id], "node 0's party to see both")
        time.sleep(0.5)  # nothing older arrives after it and hides a party again
        assert people_ids(a.events_named("presence")[-1]) == [a_id, b_id], a.events_named("presence")
        assert people_ids(b.events_named("presence")[-1]) == [a_id, b_id], b.events_named("presence")

        assert b.call("typing", {"ref": ref, "typing": True})["ok"]
        a.wait_until(lambda: any(e["user_id"] == b_id and e["typing"] for e in a.events_named("typing")),
                     "typing from node 1 on node 0")
        sent = a.send(ref, "county-1", "ECG attached")
        assert sent["ok"], sent
        b.wait_for_message("county-1")
        assert b.call("read", {"ref": ref, "seq": sent["message"]["seq"]})["ok"]
        a.wait_until(lambda: {"user_id": b_id, "seq": sent["message"]["seq"]} in a.events_named("read"),
                     "the read receipt from node 1 on node 0")

        client_b.disconnect()  # leaving on node 1 is seen on node 0
        a.wait_until(lambda: people_ids(a.events_named("presence")[-1]) == [a_id], "the specialist to leave")
    finally:
        for client in (client_a, client_b):
            client.disconnect()


def test_call_join_on_one_node_hands_the_offer_to_the_party_waiting_on_the_other(cluster, parties):
    ref, (a_email, a_id), (b_email, b_id) = parties["ref"], parties["rural"], parties["specialist"]
    client_a = on_node(cluster, 0, a_email, [CALL])
    client_b = on_node(cluster, 1, b_email, [CALL])
    try:
        a, b = CallPeer(client_a), CallPeer(client_b)
        waiting = a.call("join", {"ref": ref, "offer": {"type": "offer", "sdp": OFFER}})
        assert waiting["ok"] and waiting["peers"] == [], waiting  # nobody took its offer: it waits
        joined = b.call("join", {"ref": ref, "offer": {"type": "offer", "sdp": OFFER}})
        # call.js keeps the connection that made this offer only when the ack names the waiting peer
        assert joined["ok"] and joined["peers"] == [a_id], joined
        assert a.wait_for("peer-joined")["user_id"] == b_id
        assert joined["offered_to"] == a_id  # the join's offer went to the one other person (mesh: by `to`)
        assert a.wait_for("signal", lambda s: s["type"] == "offer") == {"type": "offer", "sdp": OFFER, "from": b_id,
                                                                       "to": a_id}
        assert a.call("signal", {"ref": ref, "type": "answer", "sdp": ANSWER})["ok"]
        assert b.wait_for("signal", lambda s: s["type"] == "answer")["from"] == a_id
        assert a.call("state", {"ref": ref, "muted": True})["ok"]
        assert b.wait_for("peer-state") == {"user_id": a_id, "muted": True}
        assert b.call("leave", {"ref": ref})["ok"]
        assert a.wait_for("peer-left")["user_id"] == b_id
        again = b.call("join", {"ref": ref})  # the call state knows the rural doctor is still waiting
        assert again["peers"] == [a_id], again
    finally:
        for client in (client_a, client_b):
            client.disconnect()


def test_a_killed_node_drops_out_of_presence_and_the_call_within_the_ttl(cluster, parties):
    ref, (a_email, a_id), (b_email, b_id) = parties["ref"], parties["rural"], parties["specialist"]
    client_a = on_node(cluster, 0, a_email, [NS, CALL])
    client_b = on_node(cluster, 1, b_email, [NS, CALL])
    try:
        a, b = Peer(client_a, a_id), Peer(client_b, b_id)
        b_call = CallPeer(client_b)
        a.join(ref)
        b.join(ref)
        assert client_a.call("join", {"ref": ref}, namespace=CALL, timeout=TIMEOUT)["ok"]
        assert b_call.call("join", {"ref": ref})["peers"] == [a_id]
        b.wait_until(lambda: people_ids(b.events_named("presence")[-1]) == [a_id, b_id], "both present")

        cluster.kill9(0)  # no disconnect handler runs on node 0: only the expiry can tell node 1
        killed = time.monotonic()
        b.wait_until(lambda: people_ids(b.events_named("presence")[-1]) == [b_id], "the killed node's party to go")
        gone_after = time.monotonic() - killed
        assert gone_after < PRESENCE_TTL * 2 + 2, gone_after  # the TTL and one heartbeat, with slack
        assert b_call.wait_for("peer-left", timeout=5) == {"user_id": a_id, "reason": "disconnected"}
        assert b_call.call("join", {"ref": ref})["peers"] == []  # the call state forgot it too
        assert [p["user_id"] for p in b.join(ref)["people"]] == [b_id]
    finally:
        for client in (client_a, client_b):
            client.disconnect()
        cluster.restart(0)


def test_presence_is_rebuilt_after_a_redis_outage_and_joins_work_during_it(cluster, parties):
    ref, (a_email, a_id), (b_email, b_id) = parties["ref"], parties["rural"], parties["specialist"]
    client_a = on_node(cluster, 0, a_email, [NS])
    client_b = None
    cluster.stop_redis()
    try:
        a = Peer(client_a, a_id)
        assert [p["user_id"] for p in a.join(ref)["people"]] == [a_id]  # local knowledge, no error
        sent = a.send(ref, "county-outage", "written while Redis is down")
        assert sent["ok"], sent
    finally:
        cluster.start_redis()  # empty: every node must put its connections back
    try:
        cluster.wait_healthy()
        client_b = on_node(cluster, 1, b_email, [NS])
        b = Peer(client_b, b_id)
        deadline = time.monotonic() + PRESENCE_TTL * 2 + 5
        while sorted(p["user_id"] for p in b.join(ref)["people"]) != [a_id, b_id]:
            assert time.monotonic() < deadline, "node 0 did not put its party back into the shared presence"
            time.sleep(0.5)
    finally:
        for client in (client_a, client_b):
            if client is not None:
                client.disconnect()


@pytest.mark.browser
def test_room_pages_on_two_nodes_list_both_doctors_and_their_call_connects_as_fast_as_on_one(
        cluster, cluster_make, browser):
    from playwright.sync_api import expect

    from tests.browser.test_call import _signed_in, _wait_remote_video

    def call_setup_ms(rural_node: int, specialist_node: int) -> float:
        rural = cluster_make.rural()
        specialist = cluster_make.specialist()
        consult = cluster_make.scheduled(rural, specialist)
        ctx_r, rural_page = _signed_in(browser, cluster.node_url(rural_node), rural.email)
        ctx_s, spec_page = _signed_in(browser, cluster.node_url(specialist_node), specialist.email)
        try:
            rural_page.goto(f"{cluster.node_url(rural_node)}/consults/{consult.ref}/room")
            spec_page.goto(f"{cluster.node_url(specialist_node)}/consults/{consult.ref}/room")
            spec_page.wait_for_function("() => window.huizhenCall.socket.connected")
            for page in (rural_page, spec_page):  # each room page lists both doctors, whichever node
                expect(page.locator("#people li.online")).to_have_count(2)
            rural_page.click("#call-join")
            rural_page.wait_for_function("() => document.getElementById('call-status').textContent"
                                         ".includes('Waiting for the other doctor')")
            spec_page.click("#call-join")
            spec_page.wait_for_function("() => window.huizhenCall.metrics.firstRemoteFrameMs !== null",
                                        timeout=30000)
            for page in (rural_page, spec_page):
                _wait_remote_video(page)
            return spec_page.evaluate("() => window.huizhenCall.metrics.firstRemoteFrameMs")
        finally:
            ctx_r.close()
            ctx_s.close()

    one_node = call_setup_ms(0, 0)
    two_nodes = call_setup_ms(0, 1)
    print(f"join to first remote frame: one node {one_node:.0f} ms, two nodes {two_nodes:.0f} ms")
    assert one_node < CALL_BOUND_MS, one_node
    assert two_nodes < CALL_BOUND_MS, (one_node, two_nodes)
