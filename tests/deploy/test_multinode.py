"""Two gunicorn/gevent nodes behind the shipped nginx config, with their own PostgreSQL and Redis.

The smoke tests of the multi-node harness (tests/cluster.py, the `cluster` fixture): chat crosses
nodes through Redis, a node killed with SIGKILL fails over through nginx with nothing lost, and
/healthz follows the database and Redis on each node and through nginx.
"""

from __future__ import annotations

import threading

import pytest
import requests
import socketio as sio_client

from tests.conftest import cookie_header, http_session
from tests.rooms.test_realserver import NS, TIMEOUT, Peer, eventually

pytestmark = pytest.mark.cluster

# The harness smoke test is about nodes, not the chat's rate limit (tests/rooms covers that).
CLUSTER_ENV = {"CHAT_MESSAGES_PER_SECOND": "1000"}


def health(url: str) -> tuple[int, dict]:
    response = requests.get(f"{url}/healthz", timeout=15)
    return response.status_code, response.json()


def stored(cluster_make, ref: str) -> list[tuple[int, str]]:
    """(seq, client_id) of the consult's messages in the cluster's database."""
    from sqlalchemy import select

    from webapp.extensions import db
    from webapp.models import Consult, Message

    db.session.rollback()
    consult_id = db.session.scalar(select(Consult.id).where(Consult.ref == ref))
    return [tuple(r) for r in db.session.execute(  # type: ignore[misc]
        select(Message.seq, Message.client_id).where(Message.consult_id == consult_id).order_by(Message.seq))]


def test_chat_crosses_nodes_and_a_node_killed_behind_nginx_fails_over_with_nothing_lost(cluster, cluster_make,
                                                                                         parties):
    ref = parties["ref"]
    x = cluster.node_behind_nginx()  # where nginx pins this process's address
    y = 1 - x
    # The rural doctor goes through nginx (long-polling first, then the WebSocket upgrade: stickiness
    # and Upgrade headers both needed); the specialist is on the other node directly.
    session_a = http_session(cluster.url, parties["rural"][0])
    session_b = http_session(cluster.node_url(y), parties["specialist"][0])
    connected = threading.Semaphore(0)
    # The client keeps its cookies in the signed-in requests session, as a browser keeps them: a Cookie
    # header passed to connect() is consumed by the first connection and missing on reconnection.
    client_a = sio_client.Client(reconnection=True, reconnection_delay=0.5, reconnection_delay_max=2,
                                 http_session=session_a)
    client_a.on("connect", connected.release, namespace=NS)
    a = Peer(client_a, parties["rural"][1])
    client_b = sio_client.Client(reconnection=False)
    b = Peer(client_b, parties["specialist"][1])
    try:
        client_a.connect(cluster.url, namespaces=[NS], wait_timeout=10)
        client_b.connect(cluster.node_url(y), namespaces=[NS], transports=["websocket"],
                         headers={"Cookie": cookie_header(session_b)}, wait_timeout=10)
        assert connected.acquire(timeout=TIMEOUT)
        a.join(ref)
        b.join(ref)
        eventually(lambda: client_a.transport() == "websocket", "the WebSocket upgrade through nginx")

        for i in range(3):  # each message crosses from one node to the other through Redis
            ack = a.send(ref, f"county-{i:03d}", f"from the county {i}")
            assert ack["ok"], ack
            assert b.send(ref, f"centre-{i:03d}", f"from the centre {i}")["ok"]
        for peer in (a, b):
            peer.wait_until(lambda p=peer: len(p.messages) >= 6, "6 messages on both nodes")
            assert [m["seq"] for m in peer.messages] == list(range(1, 7))

        cluster.kill9(x)
        assert a.disconnected.wait(TIMEOUT), "the client behind nginx did not notice its node die"
        for i in range(4):  # the other party keeps writing meanwhile, on the surviving node
            assert b.send(ref, f"centre-away-{i:03d}", f"while you were away {i}")["ok"]

        # python-socketio reconnects through nginx, which skips the dead node; the client re-joins
        # from the last seq it saw and the join ack backfills what it missed.
        assert connected.acquire(timeout=30), "no reconnection through nginx to the surviving node"
        last_seen = max(m["seq"] for m in a.messages)
        backfill = a.join(ref, after_seq=last_seen)["messages"]
        assert a.send(ref, "county-back", "back again")["ok"]
        b.wait_for_message("county-back")
        a.wait_for_message("county-back")

        in_db = stored(cluster_make, ref)
        assert len(in_db) == 11 and [seq for seq, _ in in_db] == list(range(1, 12))
        shown_a = [(m["seq"], m["client_id"]) for m in a.messages[:6] + backfill + a.messages[6:]]
        assert shown_a == in_db  # every stored message shown once, in order
        assert [(m["seq"], m["client_id"]) for m in b.messages] == in_db
    finally:
        for client in (client_a, client_b):
            client.disconnect()
        cluster.restart(x)
    assert health(cluster.node_url(x)) == (200, {"status": "ok", "checks": {"database": "ok", "redis": "ok"}})


def test_healthz_through_nginx_and_on_each_node_follows_the_database_and_redis(cluster):
    ok = (200, {"status": "ok", "checks": {"database": "ok", "redis": "ok"}})
    assert health(cluster.url) == ok

    cluster.stop_postgres()
    try:
        for i in range(len(cluster.nodes)):
            assert health(cluster.node_url(i)) == (503, {"status": "fail", "checks": {"database": "fail",
                                                                                     "redis": "ok"}})
        status, body = health(cluster.url)  # nginx passes the node's 503 to the load balancer
        assert status == 503 and body["checks"]["database"] == "fail"
    finally:
        cluster.start_postgres()
    cluster.wait_healthy()  # the pools reconnect by themselves (pre-ping)
    assert all(health(cluster.node_url(i)) == ok for i in range(len(cluster.nodes)))

    cluster.stop_redis()
    try:
        for i in range(len(cluster.nodes)):
            assert health(cluster.node_url(i)) == (503, {"status": "fail", "checks": {"database": "ok",
                                                                                     "redis": "fail"}})
    finally:
        cluster.start_redis()
    cluster.wait_healthy()
    assert health(cluster.url) == ok


def test_nginx_answers_an_oversized_long_polling_post_at_once(cluster):
    """A polling POST above SOCKET_MAX_PAYLOAD_BYTES is refused by nginx, not held open by a node."""
    handshake = requests.get(f"{cluster.url}/socket.io/?EIO=4&transport=polling", timeout=10)
    sid = handshake.text[handshake.text.index("{"):].split('"sid":"', 1)[1].split('"', 1)[0]
    limit = int(cluster.env.get("SOCKET_MAX_PAYLOAD_BYTES", 256 * 1024))
    response = requests.post(f"{cluster.url}/socket.io/?EIO=4&transport=polling&sid={sid}",
                             data=b"4" + b"x" * limit, timeout=30, headers={"Content-Type": "text/plain"})
    assert response.status_code == 413


def test_nginx_compresses_text_and_refuses_bodies_over_the_upload_limit(cluster):
    script = requests.get(f"{cluster.url}/static/js/room.js", headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert script.status_code == 200 and script.headers.get("Content-Encoding") == "gzip"
    limit = int(cluster.env.get("MAX_UPLOAD_BYTES", 15 * 1024 * 1024)) + 1024 * 1024
    too_big = requests.post(f"{cluster.url}/login", data=b"x" * (limit + 1), timeout=30,
                            headers={"Content-Type": "application/octet-stream"})
    assert too_big.status_code == 413
