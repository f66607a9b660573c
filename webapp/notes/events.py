"""The /notes Socket.IO namespace: Yjs sync over thin handlers, access checked on every event.

Protocol (binary travels as base64 strings):

- ``join {ref, state_vector}`` -> ``{ok, update, state_vector, read_only, can_edit, editors}``:
  ``update`` is what the client lacks; the client then sends ``update`` with
  ``Y.encodeStateAsUpdate(doc, state_vector)``: its offline edits, merged by the CRDT.
- ``sync {ref, state_vector}``: the same exchange without the audit entry (periodic/after an error).
- ``update {ref, update}`` -> persisted, then ``{ok, id}``; the room gets ``update`` after the commit.
- ``focus {ref, section, cursor}``: the others see who edits which section (cursor: an encoded
  Yjs relative position, relayed as is). Server -> client: ``update``, ``focus``, ``read_only``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from typing import Any

from flask import has_app_context, request
from flask_login import current_user
from flask_socketio import Namespace, join_room, leave_room
from sqlalchemy import event
from sqlalchemy.orm import Session

from ..errors import Forbidden, NotFound, ValidationFailed
from ..realtime import (  # noqa: F401  (error_ack re-exported)
    accept_connection,
    emit,
    error_ack,
    forget_connection,
    handler,
)
from ..sessionbus import register_namespace
from . import services
from .editors import Editors
from .state import notes_state

log = logging.getLogger(__name__)
NAMESPACE = "/notes"
CURSOR_RE = re.compile(r"^[A-Za-z0-9+/=]{1,256}$")


def room_name(consult_id: int) -> str:
    """The Socket.IO room of one consult's notes."""
    return f"notes:{consult_id}"


def editors() -> Editors:
    """This app's table of notes connections (per-app state, see state.py)."""
    return notes_state().editors


# A connection joined to notes its user may no longer open is disconnected at once (sessionbus).
register_namespace(NAMESPACE, joined=lambda app, sid: notes_state(app).editors.consult_of(sid),
                   entitled=services.can_open)


def decode_b64(value: Any, what: str, *, limit: int, optional: bool = False) -> bytes | None:
    """Binary sent as a base64 string (bytes are accepted too, from Python clients)."""
    if value is None and optional:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        raise ValidationFailed("%(name)s must be a base64 string.", name=what)
    if len(value) > limit * 4 // 3 + 4:
        raise ValidationFailed("%(name)s is too large.", name=what)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed("%(name)s is not valid base64.", name=what) from None


def b64(data: bytes) -> str:
    """Bytes as a base64 string for the wire."""
    return base64.b64encode(data).decode("ascii")


class NotesNamespace(Namespace):
    """Live shared notes for one consult per connection."""

    def on_connect(self, auth: Any = None) -> None:
        accept_connection(NAMESPACE)

    def on_disconnect(self, reason: Any = None) -> None:
        forget_connection(NAMESPACE)
        self._forget(request.sid)

    @staticmethod
    def _forget(sid: str) -> None:
        """The connection is no longer an editor; the others stop seeing where it typed."""
        left = editors().remove(sid)
        if left is not None and left.section:
            emit("focus", {**left.wire(), "section": None, "cursor": None},
                 to=room_name(left.consult_id), namespace=NAMESPACE)

    def _joined_consult(self, data: dict[str, Any]):
        try:
            consult = services.member_consult(current_user, data.get("ref"))
        except NotFound:
            self._leave_if_refused()
            raise
        if editors().consult_of(request.sid) != consult.id:
            raise ValidationFailed("Join the notes before sending to them.")
        return consult

    def _leave_if_refused(self) -> None:
        """A participant removed while connected hears no more of the notes it had joined."""
        joined = editors().consult_of(request.sid)
        if joined is not None and not services.still_opens(current_user, joined):
            leave_room(room_name(joined))
            self._forget(request.sid)

    def _sync_reply(self, consult, data: dict[str, Any]) -> dict[str, Any]:
        vector = decode_b64(data.get("state_vector"), "state_vector", limit=64 * 1024, optional=True)
        diff, server_vector = services.sync(consult, vector)
        return {
            "ok": True,
            "update": b64(diff),
            "state_vector": b64(server_vector),
            "read_only": consult.status in services.CLOSED,
            "can_edit": services.can_edit(current_user, consult),
        }

    @handler(remove_session=True)
    def on_join(self, data: dict[str, Any]) -> dict[str, Any]:
        try:
            consult = services.open_notes(current_user, data.get("ref"))
        except NotFound:
            self._leave_if_refused()
            raise
        previous = editors().consult_of(request.sid)
        if previous is not None and previous != consult.id:
            leave_room(room_name(previous))
        join_room(room_name(consult.id))  # before the diff: nothing committed later is missed
        editors().join(request.sid, consult.id, current_user.id, current_user.full_name)
        reply = self._sync_reply(consult, data)
        reply.update({"me": current_user.id, "sections": list(services.SECTIONS),
                      "editors": editors().in_consult(consult.id, except_sid=request.sid)})
        return reply

    @handler(remove_session=True)
    def on_sync(self, data: dict[str, Any]) -> dict[str, Any]:
        return self._sync_reply(self._joined_consult(data), data)

    @handler(remove_session=True)
    def on_update(self, data: dict[str, Any]) -> dict[str, Any]:
        consult = self._joined_consult(data)
        raw = decode_b64(data.get("update"), "update", limit=services.setting("NOTES_MAX_UPDATE_BYTES"))
        services.check_rate(current_user)
        applied = services.apply_update(current_user, consult, raw)
        if applied.id is not None:  # emitted after the commit; a repeated update is not sent twice
            emit("update", {"update": b64(applied.update), "id": applied.id, "user_id": current_user.id,
                            "name": current_user.full_name, "sections": list(applied.sections)},
                 to=room_name(consult.id), skip_sid=request.sid, namespace=NAMESPACE)
        return {"ok": True, "id": applied.id, "duplicate": applied.duplicate}

    @handler(remove_session=True)
    def on_focus(self, data: dict[str, Any]) -> dict[str, Any]:
        consult = self._joined_consult(data)
        if not services.can_edit(current_user, consult):
            raise Forbidden("Only the consult's doctors edit its notes.")
        section, cursor = data.get("section"), data.get("cursor")
        if section is not None and section not in services.SECTIONS:
            raise ValidationFailed("Unknown notes section.")
        if cursor is not None and (section is None or not isinstance(cursor, str) or not CURSOR_RE.match(cursor)):
            raise ValidationFailed("The cursor must be an encoded position in a section.")
        editors().focus(request.sid, section, cursor)
        emit("focus", {"user_id": current_user.id, "name": current_user.full_name,
                       "section": section, "cursor": cursor},
             to=room_name(consult.id), skip_sid=request.sid, namespace=NAMESPACE)
        return {"ok": True}


@event.listens_for(Session, "after_commit")
def _announce_signed(session: Session) -> None:
    """After a sign-off commits, tell open notes panels that the notes are now read-only."""
    signed = session.info.pop(services.SIGNED_KEY, None)
    if not signed or not has_app_context():
        return
    for consult_id in signed:
        emit("read_only", {"signed": True}, to=room_name(consult_id), namespace=NAMESPACE)


@event.listens_for(Session, "after_rollback")
def _forget_signed(session: Session) -> None:
    session.info.pop(services.SIGNED_KEY, None)
