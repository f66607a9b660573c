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
        assert len(harness.namespaces_exist()) == 3  # this process's run is alive
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
