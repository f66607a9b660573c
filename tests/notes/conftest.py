"""Fixtures for the shared notes: Socket.IO test clients, real clients, a fresh notes cache."""

from __future__ import annotations

import pytest

from tests.conftest import login
from tests.notes.realserver import unpatch_socket_server
from webapp.extensions import socketio
from webapp.notes import state
from webapp.realtime import SERVER_KEY

NS = "/notes"


@pytest.fixture(autouse=True)
def fresh_notes(app, monkeypatch):
    """Empty tables mean empty documents: drop cached ones, reset the rate limit (generous)."""
    state.reset(app)
    monkeypatch.setitem(app.config, "NOTES_UPDATES_PER_SECOND", 10_000)
    yield
    state.reset(app)


PATCHED = ("_send_packet", "_send_eio_packet", "async_handlers")


@pytest.fixture
def sio(app):
    """Flask-SocketIO test clients on /notes for logged-in Flask test clients.

    The test client patches the shared Socket.IO server (packets go to its queue, handlers run
    synchronously); the patches are undone afterwards, or a later real-server test in the same
    session could not talk to real clients.
    """
    server = socketio.server = app.extensions[SERVER_KEY]  # several apps exist in one test session
    saved = {name: server.__dict__[name] for name in PATCHED if name in server.__dict__}
    eio_async = server.eio.async_handlers
    made = []

    def connect(user=None, *, flask_client=None):
        flask_client = flask_client or app.test_client()
        if user is not None:
            login(flask_client, user)
        client = socketio.test_client(app, namespace=NS, flask_test_client=flask_client)
        made.append(client)
        return client

    yield connect
    for client in made:
        if client.is_connected(NS):
            client.disconnect(NS)
    for name in PATCHED:
        server.__dict__.pop(name, None)
    server.__dict__.update(saved)
    server.eio.async_handlers = eio_async


@pytest.fixture
def real_socket_server(app):
    """The app's Socket.IO server with no test-client patches left over from earlier tests."""
    return unpatch_socket_server(app)
