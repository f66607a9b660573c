"""Fixtures for the consult room: logged-in Socket.IO clients, test and real."""

from __future__ import annotations

import pytest
import socketio as sio_client

from tests.conftest import IsolatedSocketClient, cookie_header, http_session, login


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
