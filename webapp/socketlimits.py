"""Oversized Socket.IO traffic refused before it is read: long-polling bodies and WebSocket messages.

python-engineio checks ``max_http_buffer_size`` too late for both transports. A long-polling POST
whose Content-Length is over the limit makes it disconnect the session and wait for a GET poll to
drain the socket's queue, so the POST is never answered and its connection is held for ever. On
WebSocket it checks the size only after simple-websocket has buffered the whole message (a 64 MB
frame: +130 MB). Here the POST is answered 413 from its headers alone and its connection closed,
and simple-websocket is given a maximum message size, so it closes the WebSocket (1009, message too
big) as soon as the bytes received pass the limit.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask

log = logging.getLogger(__name__)
SOCKETS = ("gunicorn.socket", "werkzeug.socket")  # where each server puts the client's socket


class _ClosingResponse:
    """A short response body that shuts the connection down as soon as it has been written.

    Both servers would otherwise read the refused body after answering: gunicorn drains it to its
    end to keep the connection alive, and Werkzeug's development server drains it in 10 MB reads
    that block until that much has arrived. A client that sends the headers and then trickles (or
    nothing) would hold the connection for as long as it likes. Shutting the socket down once the
    response is out ends both drains at once.
    """

    def __init__(self, body: bytes, sock: Any) -> None:
        self._body, self._sock = body, sock

    def __iter__(self) -> Iterator[bytes]:
        yield self._body
        self.close()  # the server asks for the next chunk only after writing this one

    def close(self) -> None:
        if self._sock is None:
            return
        sock, self._sock = self._sock, None
        with contextlib.suppress(OSError):  # the client is already gone
            sock.shutdown(socket.SHUT_RDWR)


class SocketBodyLimit:
    """WSGI middleware: a POST to the Socket.IO path over ``limit`` bytes gets 413 from its headers."""

    def __init__(self, wsgi_app: Callable, limit: int, path: str = "/socket.io") -> None:
        self.wsgi_app, self.limit, self.path = wsgi_app, limit, path.rstrip("/")

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "POST" or not (path == self.path or path.startswith(self.path + "/")):
            return self.wsgi_app(environ, start_response)
        length = environ.get("CONTENT_LENGTH") or ""
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return self._refuse(environ, start_response, "411 Length Required",
                                b"A Socket.IO POST needs a Content-Length.")
        if length and (not length.isdigit() or int(length) > self.limit):
            if not length.isdigit():
                return self._refuse(environ, start_response, "400 Bad Request", b"Invalid Content-Length.")
            log.warning("refused a %s-byte Socket.IO POST from %s (limit %d)", length,
                        environ.get("REMOTE_ADDR"), self.limit)
            return self._refuse(environ, start_response, "413 Content Too Large",
                                b"The Socket.IO payload is larger than the limit.")
        return self.wsgi_app(environ, start_response)

    @staticmethod
    def _refuse(environ: dict[str, Any], start_response: Callable, status: str, body: bytes) -> Iterable[bytes]:
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(body)))])
        sock = next((environ[key] for key in SOCKETS if key in environ), None)
        return _ClosingResponse(body, sock)


def _waking_thread(thread_class: type) -> type:
    """simple-websocket's reader thread class, made to wake the receiver when it stops.

    On a message over max_message_size simple-websocket (1.1.0) sets its event *before* marking
    the connection closed; under real threads the receiver can wake in between, see the
    connection still open, and wait for ever (engineio's handler then never returns and the TCP
    connection stays open). Marking it closed and setting the event again when the reader
    thread ends closes that gap.
    """

    class WakingThread(thread_class):  # type: ignore[misc, valid-type]
        def __init__(self, target: Callable[[], Any], **kwargs: Any) -> None:
            ws = getattr(target, "__self__", None)

            def run() -> None:
                try:
                    target()
                finally:
                    if ws is not None:
                        ws.connected = False
                        ws.event.set()

            super().__init__(target=run, **kwargs)

    return WakingThread


def bounded_websocket(websocket_class: type, max_message_size: int) -> type:
    """engineio's simple-websocket wrapper class, passing simple-websocket a maximum message size."""

    class BoundedWebSocket(websocket_class):  # type: ignore[misc, valid-type]
        def __init__(self, handler: Callable, server: Any, **kwargs: Any) -> None:
            super().__init__(handler, server, **kwargs)
            if hasattr(self, "server_args"):  # simple-websocket (gevent-websocket has no such option)
                self.server_args["max_message_size"] = max_message_size
                self.server_args["thread_class"] = _waking_thread(
                    self.server_args.get("thread_class") or threading.Thread)

    BoundedWebSocket.__name__ = f"Bounded{websocket_class.__name__}"
    return BoundedWebSocket


def install_socket_limits(app: Flask, socketio_server: Any) -> None:
    """Refuse Socket.IO payloads over SOCKET_MAX_PAYLOAD_BYTES early, on both transports."""
    limit = int(app.config["SOCKET_MAX_PAYLOAD_BYTES"])
    eio = socketio_server.eio
    drivers = dict(eio._async)  # engineio shares its driver table across servers: change a copy
    if drivers.get("websocket") is not None:
        drivers["websocket"] = bounded_websocket(drivers["websocket"], limit)
    eio._async = drivers
    app.wsgi_app = SocketBodyLimit(app.wsgi_app, limit)  # type: ignore[method-assign]
