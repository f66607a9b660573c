"""A real coturn TURN server on loopback for the video tests."""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import IsolatedSocketClient, free_port, login


def udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@dataclass
class MediaWorker:
    url: str
    token: str


@contextlib.contextmanager
def run_media_worker() -> Iterator[MediaWorker]:
    """The real media worker process (python -m mediaworker) on a loopback port."""
    import os
    import sys
    import urllib.request

    port = free_port()
    token = secrets.token_hex(16)
    env = {**os.environ, "MEDIA_WORKER_TOKEN": token}
    proc = subprocess.Popen([sys.executable, "-m", "mediaworker", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"media worker exited: {proc.stdout.read() if proc.stdout else ''}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield MediaWorker(url=url, token=token)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def media_worker() -> Iterator[MediaWorker]:
    """One media worker for the session."""
    with run_media_worker() as worker:
        yield worker


@pytest.fixture
def fresh_media_worker() -> Iterator[MediaWorker]:
    """A media worker of this test's own: its live echo sessions (kept up to 2 minutes) count
    against no other test's quota."""
    with run_media_worker() as worker:
        yield worker


@pytest.fixture
def call_client(app):
    """connect(user): a /call test client signed in as the user (none: not signed in), closed after."""
    made = []

    def connect(user=None):
        flask_client = app.test_client()
        if user is not None:
            login(flask_client, user)
        client = IsolatedSocketClient(app, flask_client, "/call")
        made.append(client)
        return client

    yield connect
    for client in made:
        if client.is_connected("/call"):
            client.disconnect("/call")
