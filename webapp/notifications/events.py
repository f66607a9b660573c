"""The /notify Socket.IO namespace: each signed-in user's connections join their own room, user:<id>.

Nothing is sent by the client but `count`; the server emits `notification` (a new one, with the
unread count) and `unread` (the count changed elsewhere) after the commit, through the message
queue when REDIS_URL is set, so a change on any process reaches every tab of the user.
"""

from __future__ import annotations

from typing import Any

from flask_login import current_user
from flask_socketio import Namespace, join_room

from ..realtime import accept_connection, forget_connection, handler
from . import services

NAMESPACE = services.NAMESPACE


class NotifyNamespace(Namespace):
    """A user's live notifications."""

    def on_connect(self, auth: Any = None) -> None:
        accept_connection(NAMESPACE)
        join_room(services.user_room(current_user.id))

    def on_disconnect(self, reason: Any = None) -> None:
        forget_connection(NAMESPACE)

    @handler
    def on_count(self, data: Any = None) -> dict[str, Any]:
        return {"ok": True, "unread": services.unread_count(current_user.id)}
