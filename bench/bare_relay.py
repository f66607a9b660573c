"""The reference for the chat benchmark: a bare Flask-SocketIO relay with Huizhen's /room event shape.

No login, no database, no audit, no rate limit: ``join {ref}`` puts the connection in the room
named by ``ref``; ``send {ref, client_id, body}`` numbers the message in memory, broadcasts
``message`` to the room (sender included, as Huizhen does) and acknowledges
``{ok, message: {id, seq, ...}}``. Served by the same server command as Huizhen, e.g.

    SOCKETIO_ASYNC_MODE=gevent gunicorn -k gevent -w 1 bench.bare_relay:app
    SOCKETIO_ASYNC_MODE=threading flask --app bench.bare_relay:app run
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from typing import Any

from flask import Flask, request
from flask_socketio import Namespace, SocketIO, emit, join_room, leave_room

NAMESPACE = "/room"
ALLOWED_ORIGINS = [o.strip() for o in os.environ.get("ALLOWED_ORIGINS", "").split(",") if o.strip()]

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "bare-relay-has-no-sessions")
socketio = SocketIO(
    app,
    async_mode=os.environ.get("SOCKETIO_ASYNC_MODE", "threading"),
    cors_allowed_origins=lambda origin, environ=None: origin in ALLOWED_ORIGINS,
    message_queue=os.environ.get("REDIS_URL") or None,
    manage_session=False,
)
_ids = itertools.count(1)  # one process: the GIL makes next() atomic
_rooms: dict[str, str] = {}  # sid -> room


@app.get("/")
@app.get("/healthz")  # the multi-node harness's readiness probes (tests/cluster.py: node, then nginx)
@app.get("/login")
def health() -> str:
    return "bare relay"


class RelayNamespace(Namespace):
    def on_connect(self, auth: Any = None) -> None:
        pass

    def on_disconnect(self, reason: Any = None) -> None:
        _rooms.pop(request.sid, None)

    def on_join(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict) or not isinstance(data.get("ref"), str):
            return {"ok": False, "error": "validation"}
        previous = _rooms.get(request.sid)
        if previous is not None and previous != data["ref"]:
            leave_room(previous)
        join_room(data["ref"])
        _rooms[request.sid] = data["ref"]
        return {"ok": True, "me": request.sid, "messages": [], "receipts": {}, "people": [], "read_only": False}

    def on_send(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict) or _rooms.get(request.sid) != data.get("ref"):
            return {"ok": False, "error": "validation"}
        n = next(_ids)
        wire = {"id": n, "seq": n, "client_id": data.get("client_id"), "sender_id": request.sid,
                "sender_name": "", "body": data.get("body"), "created_at": datetime.now(UTC).isoformat()}
        emit("message", wire, to=data["ref"])
        return {"ok": True, "message": wire, "duplicate": False}


socketio.on_namespace(RelayNamespace(NAMESPACE))
