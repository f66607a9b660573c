"""The shaped-network harness itself (tests/netharness.py): it cleans up, and its shaping holds."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest

from tests.conftest import require
from tests.netharness import NETNS_DIR, SERVER_IP, NetHarness, in_netns, missing_components, remove_stale_namespaces

pytestmark = pytest.mark.netns


@pytest.fixture
def harness():
    missing = missing_components()
    require(not missing, "the network harness needs " + ", ".join(missing))
    h = NetHarness().start()
    try:
        yield h
    finally:
        h.stop()
    assert h.namespaces_exist() == []


def test_a_failed_start_leaves_no_namespace_behind(monkeypatch):
    require(not missing_components(), "the network harness needs " + ", ".join(missing_components()))
    h = NetHarness()

    def broken() -> None:
        raise RuntimeError("coturn would not start")

    monkeypatch.setattr(h, "_start_coturn", broken)
    with pytest.raises(RuntimeError, match="coturn would not start"):
        h.start()
    assert h.namespaces_exist() == []


def test_namespaces_of_a_dead_run_are_removed_and_a_live_one_is_kept(harness):
    stale = "hz-999999999x0000-a"  # no such pid
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        remove_stale_namespaces()
        assert not (NETNS_DIR / stale).exists()
        assert len(harness.namespaces_exist()) == 5  # this process's run is alive (server, 2 routers, 2 browsers)
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)


def _download_seconds(h: NetHarness, nbytes: int) -> float:
    """Seconds for browser a's namespace to receive nbytes over TCP from the server namespace."""
    listener = in_netns(h.server_ns, lambda: socket.create_server((SERVER_IP, 9100)))

    def send() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"x" * nbytes)
        listener.close()

    threading.Thread(target=send, daemon=True).start()

    def receive() -> float:
        with socket.create_connection((SERVER_IP, 9100), timeout=30) as sock:
            t0, got = time.monotonic(), 0
            while got < nbytes:
                chunk = sock.recv(65536)
                assert chunk, "connection closed early"
                got += len(chunk)
            return time.monotonic() - t0

    return in_netns(h.ns["a"], receive)


def test_the_rural_profile_caps_the_downlink_and_good_does_not(harness):
    nbytes = 128 * 1024  # 1 Mbit: 2 s at 512 kbit/s
    fast = _download_seconds(harness, nbytes)
    harness.apply("rural")
    slow = _download_seconds(harness, nbytes)
    assert slow >= 1.5, (fast, slow)  # a shaped link cannot be faster than its rate (plus the bucket)
    assert fast < slow / 4, (fast, slow)


def test_nat_blocks_the_path_between_the_browsers_and_a_drop_takes_the_link_down(harness):
    assert harness.probe_tcp("a", "10.77.2.2", 9) == "refused"  # routed through the server namespace
    harness.apply("good", nat=True)
    assert harness.probe_tcp("a", "10.77.2.2", 9) == "timeout"
    assert harness.probe_tcp("a", SERVER_IP, 9) == "refused"  # the server stays reachable
    harness.link_down("a")
    with pytest.raises(OSError):  # no route at all while the link is down
        harness.probe_tcp("a", SERVER_IP, 9)
    harness.link_up("a")
    assert harness.probe_tcp("a", SERVER_IP, 9) == "refused"


def test_nat_masquerades_each_browser_behind_its_router_with_a_new_port_per_flow(harness):
    assert harness.seen_from("a") == "10.77.1.2" and harness.seen_from("b") == "10.77.2.2"
    harness.apply("good", nat=True)
    assert harness.seen_from("a") == "10.77.11.2" and harness.seen_from("b") == "10.77.12.2"
    # symmetric: one local UDP port, two destinations, two different mapped ports
    servers = in_netns(harness.server_ns, lambda: [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)])
    for i, srv in enumerate(servers):
        in_netns(harness.server_ns, lambda s=srv, i=i: s.bind((SERVER_IP, 9200 + i)))
        srv.settimeout(5)
    client = in_netns(harness.ns["a"], lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        in_netns(harness.ns["a"], lambda: client.bind(("10.77.1.2", 40000)))
        seen = []
        for i, srv in enumerate(servers):
            client.sendto(b"x", (SERVER_IP, 9200 + i))
            seen.append(srv.recvfrom(16)[1])
        assert {addr for addr, _port in seen} == {"10.77.11.2"}, seen
        assert seen[0][1] != seen[1][1], seen
    finally:
        client.close()
        for srv in servers:
            srv.close()
    harness.apply("good", nat=False)
    assert harness.seen_from("a") == "10.77.1.2"


def test_move_gives_a_browser_a_new_address_and_the_old_one_is_gone(harness):
    harness.move("a", "10.77.1.3")
    assert harness.seen_from("a") == "10.77.1.3"
    addrs = subprocess.run(["ip", "-n", harness.ns["a"], "-4", "-o", "addr", "show", "dev", "eth0"],
                           capture_output=True, text=True, check=True).stdout
    assert "10.77.1.3/24" in addrs and "10.77.1.2/" not in addrs, addrs
    assert harness.probe_tcp("b", "10.77.1.3", 9) == "refused"  # reachable at its new address
    harness.move("a", "10.77.1.2")
    assert harness.seen_from("a") == "10.77.1.2"
