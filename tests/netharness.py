"""A shaped network for browser tests: the server, coturn and each Chromium in Linux network namespaces.

Topology (one run, unique namespace names ``hz-<id>-server``, ``hz-<id>-a``, ``hz-<id>-b`` and the
browsers' home routers ``hz-<id>-ra``, ``hz-<id>-rb``)::

    hz-<id>-a  eth0 10.77.1.2 ── lan 10.77.1.1 [hz-<id>-ra] wan 10.77.11.2 ── to-a 10.77.11.1 ┐
                                                                                            ├ hz-<id>-server
    hz-<id>-b  eth0 10.77.2.2 ── lan 10.77.2.1 [hz-<id>-rb] wan 10.77.12.2 ── to-b 10.77.12.1 ┘  lo 10.77.0.1/32
                                         (Huizhen, coturn, relays; ip_forward=1: a <-> b routed)

The kernel has no netem, so a profile is built from what it does have (docs/network-harness.md):

- bandwidth: ``tbf`` on both ends of each browser's veth (uplink on eth0, downlink on to-a/to-b);
- loss: nftables ``numgen random mod 100 < N drop`` on *ingress* (prerouting) at both ends, so a
  sender never sees EPERM; it hits every packet (HTTP, WebSocket, STUN/TURN, media);
- delay and jitter: a user-space UDP relay per browser in the server namespace, between that
  browser and coturn. Each browser's namespace DNATs ``10.77.0.1:3478`` to its own relay, so a
  call with ``FORCE_TURN_RELAY`` (iceTransportPolicy relay) carries all its media through both
  relays: one-way delay a→b = a's relay + b's relay, each adding RTT/4 per direction (behind the
  nat on a profile without delay, TURN goes straight to coturn, which then sees the NAT's mapping).
- drop: ``link_down(side)`` sets the browser's eth0 down (routes go, Chromium sees the network
  vanish), ``link_up(side)`` brings it back with its routes.
- nat: each home router MASQUERADEs its browser behind its wan address with a fully random port per
  flow (a symmetric NAT) and lets in only replies (conntrack established/related): the browsers'
  host addresses are unreachable, a server-reflexive mapping is good for its own destination
  only, and only the TURN relay connects the browsers.
- move: ``move(side, addr)`` gives a browser a new address mid-call (the old one deleted, the new
  one added with its default route): every socket bound to the old address is dead.

Nothing here touches the host's own network namespace: the veths are created inside the
namespaces, and the Huizhen live server's listening socket is opened in the server namespace by a
thread that ``setns()``-es into it (the request threads themselves stay in the host namespace, so
the app still reaches PostgreSQL and Redis on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from werkzeug.serving import make_server

SERVER_IP = "10.77.0.1"
TURN_PORT = 3478
SERVER_PORT = 8000
SIDES = {"a": ("10.77.1.2", "10.77.1.1"), "b": ("10.77.2.2", "10.77.2.1")}  # browser, its router's lan
WAN = {"a": ("10.77.11.2", "10.77.11.1"), "b": ("10.77.12.2", "10.77.12.1")}  # router's wan, server's to-<side>
NETNS_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    """A link's shape in each direction: rate (None = unshaped), round-trip time, jitter and loss."""

    name: str
    rate_kbit: int | None = None
    rtt_ms: int = 0
    jitter_ms: int = 0
    loss_pct: int = 0


PROFILES: dict[str, Profile] = {
    "good": Profile("good"),
    "rural": Profile("rural", rate_kbit=512, rtt_ms=150, jitter_ms=10, loss_pct=1),
    "poor": Profile("poor", rate_kbit=128, rtt_ms=300, jitter_ms=30, loss_pct=3),
    "audio": Profile("audio", rate_kbit=64, rtt_ms=300, jitter_ms=30, loss_pct=5),
}
# "drop" is not a shape but an event: NetHarness.drop(side, seconds) (link down, then up) on any profile.


def missing_components() -> list[str]:
    """What this machine lacks for the harness (root, ip, tc, nft, coturn, chromium)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables"), ("turnserver", "coturn")):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            missing.append(f"{tool} ({package})")
    if not Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")).exists():
        missing.append("chromium")
    return missing


def _run(*args: str, input: str | None = None) -> str:
    proc = subprocess.run(list(args), input=input, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """Run fn in a short-lived thread switched into network namespace `name` (setns is per thread);
    sockets it opens live in that namespace for good, whichever thread uses them afterwards."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            enter_netns(name)
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def enter_netns(name: str) -> None:
    """Switch the calling thread (only it) into network namespace `name`."""
    fd = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def die_with_parent() -> None:
    """preexec_fn for processes started in a namespace: SIGTERM them when the test process dies,
    even by SIGKILL (PR_SET_PDEATHSIG survives the exec of `ip netns exec` and of its command)."""
    _libc.prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM


def remove_stale_namespaces() -> None:
    """Delete hz-<pid>x… namespaces left by a run whose process is gone (a crash, a SIGKILL)."""
    if not NETNS_DIR.exists():
        return
    for entry in NETNS_DIR.iterdir():
        name = entry.name
        if not name.startswith("hz-") or "x" not in name:
            continue
        pid = name[3:].split("x", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


# --- the delay relay -----------------------------------------------------------------------------


class _RelayProtocol(asyncio.DatagramProtocol):
    """Browser-facing side of one relay: each browser address gets an upstream socket to coturn."""

    def __init__(self, relay: DelayRelay) -> None:
        self.relay = relay
        self.transport: asyncio.DatagramTransport | None = None
        self.upstreams: dict[tuple, asyncio.DatagramTransport] = {}
        self.pending: dict[tuple, list[bytes]] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.relay.clients.add(addr[0])
        upstream = self.upstreams.get(addr)
        if upstream is None:
            if addr in self.pending:
                self.pending[addr].append(data)
                return
            self.pending[addr] = [data]
            asyncio.get_running_loop().create_task(self._open_upstream(addr))
            return
        self.relay.later("up", lambda: upstream.sendto(data))

    async def _open_upstream(self, addr) -> None:
        loop = asyncio.get_running_loop()
        back = self

        class Up(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, _src) -> None:
                back.relay.later("down", lambda: back.transport.sendto(data, addr))

        upstream, _ = await loop.create_datagram_endpoint(Up, local_addr=(SERVER_IP, 0),
                                                          remote_addr=(SERVER_IP, TURN_PORT))
        self.upstreams[addr] = upstream
        for data in self.pending.pop(addr, []):
            self.relay.later("up", lambda d=data: upstream.sendto(d))


class DelayRelay:
    """A UDP relay between one browser and coturn adding one-way delay (plus jitter, order kept)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int) -> None:
        self.loop = loop
        self.port = port
        self.delay_s = 0.0
        self.jitter_s = 0.0
        self.packets = 0
        self.clients: set[str] = set()  # the browser addresses it has relayed for
        self._last_due = {"up": 0.0, "down": 0.0}

    def later(self, direction: str, send: Callable[[], None]) -> None:
        self.packets += 1
        if self.delay_s <= 0 and self.jitter_s <= 0:
            send()
            return
        now = self.loop.time()
        due = now + self.delay_s + random.uniform(-self.jitter_s, self.jitter_s)
        due = max(due, self._last_due[direction], now)  # jitter without reordering
        self._last_due[direction] = due
        self.loop.call_at(due, send)


# --- the harness ------------------------------------------------------------------------------------


class NetHarness:
    """Namespaces, links, coturn and the delay relays of one test run; see the module docstring."""

    def __init__(self, run_id: str | None = None) -> None:
        self.id = run_id or f"{os.getpid()}x{secrets.token_hex(2)}"
        self.server_ns = f"hz-{self.id}-server"
        self.ns = {side: f"hz-{self.id}-{side}" for side in SIDES}
        self.router_ns = {side: f"hz-{self.id}-r{side}" for side in SIDES}
        self.addr = {side: SIDES[side][0] for side in SIDES}  # each browser's current address
        self.tmp = Path(tempfile.mkdtemp(prefix=f"huizhen-net-{self.id}-"))
        self.turn_secret = secrets.token_hex(16)
        self.turn_url = f"turn:{SERVER_IP}:{TURN_PORT}?transport=udp"
        self.profile = PROFILES["good"]
        self.nat = False
        self.relays: dict[str, DelayRelay] = {}
        self._coturn: subprocess.Popen | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._browsers: list[Any] = []
        self._servers: list[Any] = []
        self._down: set[str] = set()

    # -- lifecycle

    def start(self) -> NetHarness:
        """Build the namespaces and links, start coturn and the relays (all undone by stop())."""
        remove_stale_namespaces()
        try:
            self._build()
            self._start_relays()
            self._start_coturn()
            self.apply("good")
        except BaseException:
            self.stop()
            raise
        return self

    def _all_ns(self) -> list[str]:
        return [self.server_ns, *self.router_ns.values(), *self.ns.values()]

    def _build(self) -> None:
        for name in self._all_ns():
            _run("ip", "netns", "add", name)
            _run("ip", "-n", name, "link", "set", "lo", "up")
        s = self.server_ns
        _run("ip", "-n", s, "addr", "add", f"{SERVER_IP}/32", "dev", "lo")  # no dummy module in this kernel
        _run("ip", "netns", "exec", s, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for side, (addr, gw) in SIDES.items():
            ns, r = self.ns[side], self.router_ns[side]
            wan, wan_gw = WAN[side]
            _run("ip", "link", "add", "name", "eth0", "netns", ns, "type", "veth", "peer", "name", "lan", "netns", r)
            _run("ip", "link", "add", "name", "wan", "netns", r, "type", "veth",
                 "peer", "name", f"to-{side}", "netns", s)
            _run("ip", "-n", s, "addr", "add", f"{wan_gw}/24", "dev", f"to-{side}")
            _run("ip", "-n", s, "link", "set", f"to-{side}", "up")
            _run("ip", "-n", s, "route", "add", f"{gw.rsplit('.', 1)[0]}.0/24", "via", wan)
            _run("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            _run("ip", "-n", r, "addr", "add", f"{gw}/24", "dev", "lan")
            _run("ip", "-n", r, "addr", "add", f"{wan}/24", "dev", "wan")
            for dev in ("lan", "wan"):
                _run("ip", "-n", r, "link", "set", dev, "up")
            _run("ip", "-n", r, "route", "add", "default", "via", wan_gw)
            _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            self._link_up(side)

    def _link_up(self, side: str) -> None:
        ns, gw = self.ns[side], SIDES[side][1]
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "route", "replace", "default", "via", gw)

    def _start_relays(self) -> None:
        ready = threading.Event()
        box: dict[str, Any] = {}

        def body() -> None:
            try:
                enter_netns(self.server_ns)
                loop = asyncio.new_event_loop()
                self._loop = loop
                for i, side in enumerate(SIDES):
                    relay = DelayRelay(loop, TURN_PORT + 1 + i)
                    loop.run_until_complete(loop.create_datagram_endpoint(
                        lambda r=relay: _RelayProtocol(r), local_addr=(SERVER_IP, relay.port)))
                    self.relays[side] = relay
            except BaseException as exc:
                box["error"] = exc
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._loop_thread = threading.Thread(target=body, daemon=True, name=f"hz-relays-{self.id}")
        self._loop_thread.start()
        ready.wait(10)
        if "error" in box:
            raise box["error"]

    def _start_coturn(self) -> None:
        port_lo = 49152
        cmd = ["ip", "netns", "exec", self.server_ns, shutil.which("turnserver") or "/usr/bin/turnserver",
               "-n", "--use-auth-secret", f"--static-auth-secret={self.turn_secret}", "--realm=huizhen.test",
               f"--listening-ip={SERVER_IP}", f"--relay-ip={SERVER_IP}", f"--listening-port={TURN_PORT}",
               "--no-tls", "--no-dtls", "--no-cli", "--no-tcp-relay", f"--min-port={port_lo}",
               f"--max-port={port_lo + 99}", "--log-file=stdout", "--simple-log"]
        log = open(self.tmp / "coturn.log", "wb")  # noqa: SIM115 - kept open for the process's life
        self._coturn = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._coturn.poll() is not None:
                raise RuntimeError(f"turnserver exited: {(self.tmp / 'coturn.log').read_text()[-500:]}")
            out = _run("ip", "netns", "exec", self.server_ns, "ss", "-lun")
            if f"{SERVER_IP}:{TURN_PORT} " in out:
                return
            time.sleep(0.1)
        raise RuntimeError("turnserver did not start listening")

    def stop(self) -> None:
        """Close browsers and servers, stop coturn and the relays, delete the namespaces (idempotent)."""
        for b in self._browsers:
            with contextlib.suppress(Exception):
                b.close()
        self._browsers.clear()
        for server, thread in self._servers:
            with contextlib.suppress(Exception):
                server.shutdown()
                server.server_close()
                thread.join(timeout=5)
        self._servers.clear()
        if self._coturn is not None and self._coturn.poll() is None:
            self._coturn.terminate()
            try:
                self._coturn.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._coturn.kill()
                self._coturn.wait()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)
        for name in self._all_ns():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def namespaces_exist(self) -> list[str]:
        """The run's namespaces still present (empty after stop())."""
        return [n for n in self._all_ns() if (NETNS_DIR / n).exists()]

    # -- shaping

    def apply(self, profile: str | Profile, *, nat: bool | None = None) -> None:
        """Shape both browsers' links with a profile (replacing the previous one); nat=True/False
        puts both browsers behind / takes them out of a symmetric MASQUERADE NAT (module docstring)."""
        p = PROFILES[profile] if isinstance(profile, str) else profile
        self.profile = p
        if nat is not None:
            self.nat = nat
        for side in SIDES:
            for ns, dev in ((self.ns[side], "eth0"), (self.server_ns, f"to-{side}")):
                subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"],
                               capture_output=True)
                if p.rate_kbit:
                    # bucket: ~1/8 s of traffic, never under a few full-size packets (a packet larger
                    # than the bucket would never pass)
                    burst = max(4096, p.rate_kbit * 1000 // 64)
                    _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                         "rate", f"{p.rate_kbit}kbit", "burst", str(burst), "latency", "400ms")
            self._nft(self.ns[side], self._browser_rules(side, p))
            self._nft(self.router_ns[side], self._router_rules())
        self._nft(self.server_ns, self._server_rules(p))
        for relay in self.relays.values():
            relay.delay_s = p.rtt_ms / 4000  # each direction of each relay: RTT/4
            relay.jitter_s = p.jitter_ms / 2000

    def _browser_rules(self, side: str, p: Profile) -> str:
        relay_port = self.relays[side].port
        loss = f'iifname "eth0" numgen random mod 100 < {p.loss_pct} drop' if p.loss_pct else ""
        # Behind the NAT on a link without delay the TURN traffic goes straight to coturn, which
        # then sees (and reports as server-reflexive) the NAT's mapping, not the delay relay's socket.
        steer = (f"ip daddr {SERVER_IP} udp dport {TURN_PORT} dnat to {SERVER_IP}:{relay_port}"
                 if not (self.nat and p.rtt_ms == 0 and p.jitter_ms == 0) else "")
        return f"""table inet hzloss {{
  chain hzpre {{
    type filter hook prerouting priority -300
    {loss}
  }}
}}
table ip hzturn {{
  chain hzout {{
    type nat hook output priority -100
    {steer}
  }}
}}
"""

    def _server_rules(self, p: Profile) -> str:
        loss = "\n    ".join(f'iifname "to-{side}" numgen random mod 100 < {p.loss_pct} drop'
                             for side in SIDES) if p.loss_pct else ""
        return f"""table inet hzloss {{
  chain hzpre {{
    type filter hook prerouting priority -300
    {loss}
  }}
}}
"""

    def _router_rules(self) -> str:
        if not self.nat:
            return "table ip hznat {\n}\n"
        # A carrier-grade NAT as ICE meets it: a new random port for every flow (symmetric: the
        # mapping coturn reports is no good towards the other browser) and nothing in that is not a
        # reply (the host address behind it cannot be reached).
        return """table ip hznat {
  chain hzpost {
    type nat hook postrouting priority 100
    oifname "wan" masquerade fully-random
  }
  chain hzfwd {
    type filter hook forward priority 0
    iifname "wan" ct state != { established, related } drop
  }
}
"""

    @staticmethod
    def _nft(ns: str, rules: str) -> None:
        for table in ("inet hzloss", "ip hzturn", "ip hznat"):
            subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", *table.split()], capture_output=True)
        _run("ip", "netns", "exec", ns, "nft", "-f", "-", input=rules)

    def link_down(self, side: str) -> None:
        """Take a browser's link down (its routes go with it; Chromium sees the network vanish)."""
        _run("ip", "-n", self.ns[side], "link", "set", "eth0", "down")
        self._down.add(side)

    def link_up(self, side: str) -> None:
        """Bring a browser's link back, with its default route."""
        self._link_up(side)
        self._down.discard(side)

    def move(self, side: str, addr: str) -> None:
        """The browser's link changes address (a new DHCP lease, another access point): the old
        address is deleted and `addr` (in the same /24 behind the side's router) added, with the
        default route. Sockets bound to the old address are dead; Chromium sees the change."""
        ns, gw = self.ns[side], SIDES[side][1]
        if addr == self.addr[side]:
            return
        # deleted first: deleting a primary address would take a secondary in its subnet with it
        _run("ip", "-n", ns, "addr", "del", f"{self.addr[side]}/24", "dev", "eth0")
        _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        self.addr[side] = addr
        if side not in self._down:
            _run("ip", "-n", ns, "route", "replace", "default", "via", gw)

    def drop(self, side: str, seconds: float) -> None:
        """The `drop` profile: the link is down for `seconds`, then up again."""
        self.link_down(side)
        try:
            time.sleep(seconds)
        finally:
            self.link_up(side)

    # -- what runs in the namespaces

    def serve(self, app, port: int = SERVER_PORT) -> str:
        """Serve `app` (threaded Werkzeug, like the live_server fixture) on SERVER_IP:port inside the
        server namespace; returns its base URL. Stopped by stop() or stop_servers()."""
        def listen() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((SERVER_IP, port))
            sock.listen(128)
            return sock

        sock = in_netns(self.server_ns, listen)
        server = make_server(SERVER_IP, port, app, threaded=True, fd=sock.fileno())
        sock.close()  # make_server holds a duplicate
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self._servers.append((server, thread))
        return f"http://{SERVER_IP}:{port}"

    def stop_servers(self) -> None:
        """Stop the servers started by serve() (the namespaces stay)."""
        for server, thread in self._servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        self._servers.clear()

    def chromium_path(self, side: str) -> str:
        """An executable that runs Debian's Chromium inside the side's namespace (Playwright launches
        it and drives it over its inherited --remote-debugging-pipe, which `ip netns exec` keeps)."""
        path = self.tmp / f"chromium-{side}"
        chromium = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.ns[side]} {chromium} "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return str(path)

    def launch(self, browser_type, side: str, args: list[str], port: int = SERVER_PORT):
        """A Playwright Browser running in the side's namespace (closed by stop()). The server's
        http://10.77.0.1:port origin is treated as secure (getUserMedia needs a secure context, which
        plain http is only on loopback)."""
        args = [*args, f"--unsafely-treat-insecure-origin-as-secure=http://{SERVER_IP}:{port}"]
        b = browser_type.launch(executable_path=self.chromium_path(side), args=args)
        self._browsers.append(b)
        return b

    def seen_from(self, side: str, port: int = 9101) -> str:
        """The address the server namespace sees a TCP connection from the side's browser come from
        (the browser's own address, or its router's wan address behind the NAT)."""
        listener = in_netns(self.server_ns, lambda: socket.create_server((SERVER_IP, port)))
        try:
            with in_netns(self.ns[side], lambda: socket.create_connection((SERVER_IP, port), timeout=5)):
                conn, peer = listener.accept()
                conn.close()
        finally:
            listener.close()
        return peer[0]

    def probe_tcp(self, side: str, host: str, port: int, timeout: float = 1.5) -> str:
        """From the side's namespace, try a TCP connection: 'connected', 'refused' or 'timeout'."""
        def attempt() -> str:
            with socket.socket() as sock:
                sock.settimeout(timeout)
                try:
                    sock.connect((host, port))
                    return "connected"
                except ConnectionRefusedError:
                    return "refused"
                except TimeoutError:
                    return "timeout"
        return in_netns(self.ns[side], attempt)

    def coturn_log(self) -> str:
        """The tail of coturn's log, for assertion messages."""
        path = self.tmp / "coturn.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""
