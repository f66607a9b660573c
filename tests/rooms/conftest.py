"""Fixtures for the consult room: logged-in Socket.IO clients, test and real."""

from __future__ import annotations

import re

import pytest
import requests
import socketio as sio_client

from tests.conftest import PASSWORD, IsolatedSocketClient, login


@pytest.fixture
def sio(app):
    """Build Flask-SocketIO test clients for logged-in Flask test clients."""
    made = []

    def connect(user=None, *, flask_client=None, namespace="/room"):
        flask_client = flask_client or app.test_client()
        if user is not None:
            login(flask_client, user)
        client = IsolatedSocketClient(app, flask_client, namespace)  # one app context per event
        made.append(client)
        return client

    yield connect
    for client in made:
        if client.is_connected("/room"):
            client.disconnect("/room")


def http_session(base_url: str, email: str, password: str = PASSWORD) -> requests.Session:
    """A requests session signed in through the real login form."""
    session = requests.Session()
    page = session.get(f"{base_url}/login", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    r = session.post(f"{base_url}/login", data={"email": email, "password": password, "csrf_token": token},
                     allow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text[:300]
    return session


def cookie_header(session: requests.Session) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in session.cookies)


@pytest.fixture
def real_client(live_server):
    """python-socketio clients connected to the live server as a given user."""
    made: list[sio_client.Client] = []

    def connect(user, *, transports=("websocket",), namespace="/room") -> sio_client.Client:
        session = http_session(live_server.url, user.email)
        client = sio_client.Client(reconnection=False)
        client.connect(live_server.url, namespaces=[namespace], transports=list(transports),
                       headers={"Cookie": cookie_header(session)}, wait_timeout=10)
        client.http_session = session  # type: ignore[attr-defined]
        made.append(client)
        return client

    yield connect
    for client in made:
        if client.connected:
            client.disconnect()
