"""Oversized Socket.IO traffic on a real server process: refused early, connection closed, memory bounded.

Each test runs against the development server (``flask run``, Werkzeug threads, as ``make run``)
and the production one (gunicorn's gevent worker with simple-websocket), each started in a
subprocess on a loopback port so that its memory can be read from /proc.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import websocket

from config import Config
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LIMIT = Config.SOCKET_MAX_PAYLOAD_BYTES
HUGE = 64 * 1024 * 1024
PROMPT = 10  # seconds: "at once" on a loaded two-core machine; unfixed servers never answer


class ServerProcess:
    """Huizhen served by a real server in a subprocess, on its own SQLite database."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind, self.port = kind, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "FLASK_APP": "wsgi.py", "DATABASE_URL": f"sqlite:///{tmp / 'huizhen.db'}",
                    "UPLOAD_DIR": str(tmp / "uploads"), "ALLOWED_ORIGINS": self.url, "REDIS_URL": "",
                    "RATELIMIT_STORAGE_URI": "memory://", "HUIZHEN_ENV": "development"}
        self.env.pop("FLASK_DEBUG", None)
        if kind == "werkzeug":
            self.cmd = [str(BIN / "flask"), "run", "--host", "127.0.0.1", "--port", str(self.port)]
        else:
            self.env.update(HUIZHEN_ENV="production", SECRET_KEY=secrets.token_urlsafe(48), HUIZHEN_ALLOW_SQLITE="1",
                            SESSION_COOKIE_SECURE="0")
            self.cmd = [str(BIN / "gunicorn"), "-k", "gevent", "-w", "1", "-b", f"127.0.0.1:{self.port}", "wsgi:app"]
        self.log = tmp / f"{kind}.log"

    def start(self) -> ServerProcess:
        subprocess.run([str(BIN / "flask"), "db", "upgrade"], cwd=ROOT, env={**self.env, "HUIZHEN_ENV": "development"},
                       check=True, capture_output=True, timeout=120)
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("w"))
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited: {self.log.read_text()[-2000:]}")
            try:
                requests.get(f"{self.url}/login", timeout=2)
                return self
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def pids(self) -> list[int]:
        """The server process and its children (gunicorn's worker)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [self.proc.pid, *map(int, children)]

    def peak_kb(self) -> int:
        """The peak resident memory (VmHWM) of the server's processes, in KiB."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        return total

    def handshake(self) -> str:
        """Open an Engine.IO long-polling session; its sid."""
        r = requests.get(f"{self.url}/socket.io/?EIO=4&transport=polling", timeout=PROMPT)
        assert r.status_code == 200, r.text
        return json.loads(r.text[1:])["sid"]


@pytest.fixture(scope="module", params=["werkzeug", "gevent"])
def server(request, tmp_path_factory) -> Iterator[ServerProcess]:
    proc = ServerProcess(request.param, tmp_path_factory.mktemp(request.param)).start()
    yield proc
    proc.stop()


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends before it closes the connection (a reset counts as closed)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def test_an_over_limit_polling_post_gets_413_and_its_connection_closed(server):
    sid = server.handshake()
    with socket.create_connection(("127.0.0.1", server.port), timeout=PROMPT) as sock:
        sock.sendall(f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {HUGE}\r\n\r\n".encode())
        sock.sendall(b"4" * 65536)  # a start of the body, then the client waits (as a slow client would)
        started = time.monotonic()
        reply = _read_until_closed(sock)  # socket.timeout (a failure) if the server holds the connection
        assert time.monotonic() - started < PROMPT
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    # a POST within the limit is still served, and other clients are unaffected
    ok = requests.post(f"{server.url}/socket.io/?EIO=4&transport=polling&sid={server.handshake()}",
                       data="40", headers={"Content-Type": "text/plain;charset=UTF-8"}, timeout=PROMPT)
    assert ok.status_code == 200 and ok.text == "OK"


def test_a_chunked_polling_post_without_length_is_refused(server):
    sid = server.handshake()
    r = requests.post(f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}",
                      data=iter([b"4" * 1024] * 4), headers={"Content-Type": "text/plain;charset=UTF-8"},
                      timeout=PROMPT)
    assert r.status_code == 411


def test_an_oversized_websocket_message_is_refused_with_bounded_memory(server):
    before = server.peak_kb()
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket",
                                     origin=server.url, timeout=PROMPT)
    try:
        assert ws.recv().startswith("0{")  # the Engine.IO OPEN packet
        started = time.monotonic()
        with pytest.raises((websocket.WebSocketException, OSError)):
            ws.send("4" + "x" * HUGE)  # one 64 MB frame: the server must close while it arrives
            ws.recv()  # or, had the frame gone through whole, its close frame must come now
            ws.recv()
        assert time.monotonic() - started < PROMPT * 2
    finally:
        ws.shutdown()
    grown_mb = (server.peak_kb() - before) / 1024
    assert grown_mb < 16, f"the server's peak memory grew by {grown_mb:.0f} MB for one refused frame"
    # a message within the limit still goes through on another connection
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket",
                                     origin=server.url, timeout=PROMPT)
    try:
        ws.recv()
        ws.send("40" + json.dumps({"pad": "x" * 1000}))  # CONNECT to "/" (anonymous): answered, not dropped
        assert ws.recv().startswith("4")
    finally:
        ws.close()
