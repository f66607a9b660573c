"""Helpers for tests that serve the app to real clients (python-socketio, Chromium)."""

from __future__ import annotations

from flask import Flask

from webapp.realtime import SERVER_KEY


def unpatch_socket_server(app: Flask):
    """Undo what a Flask-SocketIO test client did to the shared server earlier in the session.

    The test client routes packets to its own queue (``_send_packet``/``_send_eio_packet``) and
    makes handlers synchronous; a real client of the same server would then never hear back.
    """
    server = app.extensions[SERVER_KEY]
    for name in ("_send_packet", "_send_eio_packet"):
        server.__dict__.pop(name, None)
    server.async_handlers = server.eio.async_handlers = True  # Flask-SocketIO's default
    return server
