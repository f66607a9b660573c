"""The /room Socket.IO namespace: thin handlers over the rooms package, membership checked on every event."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, request, session
from flask_login import current_user
from flask_socketio import Namespace, join_room, leave_room

from ..errors import DomainError, ValidationFailed
from ..presence import Snapshot, people
from ..realtime import (
    Connections,
    accept_connection,
    connections,
    emit,
    error_ack,
    forget_connection,
    handler,
    require_user,
    server_error_ack,
)
from ..sessionbus import register_namespace
from . import access, history, receipts, send
from .wire import to_wire

NAMESPACE = "/room"
log = logging.getLogger(__name__)


def room_name(consult_id: int) -> str:
    """The Socket.IO room of one consult."""
    return f"consult:{consult_id}"


def presence_of(app: Flask) -> Connections:
    """Who is connected to which consult room (across nodes with REDIS_URL); announces rooms that change."""
    table = connections(NAMESPACE, app)
    table.on_change(_announce)
    return table


def _presence_payload(consult_id: int, snap: Snapshot) -> dict[str, Any]:
    """The room's people with their roles, and the revision they were read at (room.js ignores an older list)."""
    return {"people": receipts.people_in_room(consult_id, people(snap.members)), "rev": snap.rev}


def _announce(consult_id: int, snap: Snapshot) -> None:
    """A room changed without an event here (a node died, Redis was refilled): tell its members."""
    emit("presence", _presence_payload(consult_id, snap), to=room_name(consult_id), namespace=NAMESPACE)


def _presence() -> Connections:
    return connections(NAMESPACE)


def _in_room(consult_id: int) -> set[int]:
    """The user ids in the consult's room, on every node."""
    return {m.user_id for m in _presence().snapshot(consult_id).members}


# A connection joined to a consult it may no longer enter is disconnected at once (sessionbus).
register_namespace(NAMESPACE, joined=lambda app, sid: connections(NAMESPACE, app).consult_of(sid),
                   entitled=access.can_enter)


class RoomNamespace(Namespace):
    """Chat, presence, typing and read receipts for one consult room per connection."""

    def on_connect(self, auth: Any = None) -> None:
        accept_connection(NAMESPACE)

    def on_disconnect(self, reason: Any = None) -> None:
        forget_connection(NAMESPACE)
        left = _presence().remove(request.sid)
        if left is not None:
            emit("presence", _presence_payload(left[0], _presence().snapshot(left[0])), to=room_name(left[0]),
                 namespace=NAMESPACE)

    def _joined_consult(self, data: dict[str, Any]):
        consult = access.member_consult(current_user, data.get("ref"))
        if _presence().consult_of(request.sid) != consult.id:
            raise ValidationFailed("Join the room before sending to it.")
        return consult

    @handler
    def on_join(self, data: dict[str, Any]) -> dict[str, Any]:
        joined = _presence().entry(request.sid)
        # a connection joining its own room again (a retry) does not announce the user again
        again = joined is not None and joined.ref == data.get("ref")
        consult = access.enter_room(current_user, data.get("ref"), present=None if again else _in_room)
        previous = _presence().consult_of(request.sid)
        if previous is not None and previous != consult.id:
            leave_room(room_name(previous))
        join_room(room_name(consult.id))
        token = session.get("_user_id")  # kept for the lean send path (no session decoding per message)
        _presence().add(request.sid, consult.id, current_user.id, current_user.full_name, consult.ref,
                        token if isinstance(token, str) else "")
        backlog = history.join_backlog(consult, data.get("after_seq", 0))
        present = _presence_payload(consult.id, _presence().snapshot(consult.id))  # every node's members
        emit("presence", present, to=room_name(consult.id), namespace=NAMESPACE)
        return {
            "ok": True,
            "me": current_user.id,
            "messages": [to_wire(m) for m in backlog.messages],
            "has_more": backlog.has_more,  # older messages exist: page back with "history"
            "more": backlog.more,  # newer messages exist: page forward with "backfill"
            "last_seq": backlog.last_seq,
            "receipts": {str(k): v for k, v in receipts.read_receipts(consult).items()},
            "participants": receipts.participants(consult),  # names and roles of readers not in the room
            "people": present["people"],
            "presence_rev": present["rev"],
            "read_only": consult.status in access.CLOSED,
        }

    def _sender(self, data: dict[str, Any]) -> send.Sender | None:
        """Who sends on this connection, from its joined room and its session key (checked by the store)."""
        joined, token = _presence().entry(request.sid), session.get("_user_id")
        if joined is None or not isinstance(token, str) or data.get("ref") != joined.ref:
            return None
        return send.Sender(joined.user_id, token, joined.name, joined.consult_id)

    def _resolve(self, data: dict[str, Any]) -> tuple[Any, Any]:
        require_user()
        return current_user, self._joined_consult(data)

    def trigger_event(self, event: str, *args: Any) -> Any:
        """Every event goes through Flask-SocketIO (a request context, the session, the handler),
        except a chat message the lean path can store by itself (see _send_lean)."""
        if event == "send" and len(args) == 2 and self.socketio is not None:
            return self._send_lean(*args)
        return super().trigger_event(event, *args)

    def _send_lean(self, sid: str, data: Any) -> Any:
        """The chat's hot path with an app context only: no request context, no session cookie
        decoding, no user loaded (each cost more than the statement that stores the message).

        It takes only what it can finish: a plain text message on a connection that joined this
        room, whose payload passes the handler's checks and that owes nobody a notification.
        Anything else goes the ordinary way (on_send) before anything is counted; a refusal
        counted here is answered in a request context (the ack speaks the user's language), and
        a message the fast path left undecided goes to the full path without being counted again.
        """
        environ = self.socketio.server.get_environ(sid, namespace=self.namespace)
        if not environ:
            return super().trigger_event("send", sid, data)
        with environ["flask.app"].app_context():
            try:
                sender, tried = send.send_lean(connections(NAMESPACE).entry(sid), data, sid, NAMESPACE, _in_room)
            except DomainError as refused:  # counted and refused: the ack in the user's language
                return self.socketio._handle_event(lambda *_, exc=refused: error_ack(exc), "send", self.namespace,
                                                   sid, data)
            except send.LeanSendFailed:  # counted, then failed: as realtime.handler answers a failure
                log.exception("socket event send failed")
                return self.socketio._handle_event(lambda *_: server_error_ack(), "send", self.namespace, sid, data)
            except Exception:  # before anything was counted: the ordinary path answers
                log.exception("the lean chat send failed; the ordinary path answers")
                sender, tried = None, None
            if sender is None:
                return super().trigger_event("send", sid, data)
            if tried is not None and tried.wire is not None:
                emit("message", tried.wire, to=room_name(sender.consult_id), namespace=NAMESPACE)
                return {"ok": True, "message": tried.wire, "duplicate": False}
        return self.socketio._handle_event(lambda payload: self._send_counted(payload, tried=tried), "send",
                                           self.namespace, sid, data)

    @handler(authenticate=False)  # the store proves the session (send.post_message_fast)
    def on_send(self, data: dict[str, Any]) -> dict[str, Any]:
        return self._store_and_relay(data)

    @handler(authenticate=False, counted=True)  # the lean path counted it already
    def _send_counted(self, data: dict[str, Any], tried: send.FastPost | None = None) -> dict[str, Any]:
        """The full path for a send the lean path counted (and tried, unless tried is None): not again."""
        return self._store_and_relay(data, tried)

    def _store_and_relay(self, data: dict[str, Any], tried: send.FastPost | None = None) -> dict[str, Any]:
        try:
            sent = send.send_message(self._sender(data), lambda: self._resolve(data),
                                     data.get("client_id"), data.get("body"), data.get("attachment_id"),
                                     client_seq=data.get("client_seq"), waited_ms=data.get("waited_ms"),
                                     present=_in_room, tried=tried)
        except send.OutOfOrder as refused:  # the client renumbers its outbox after this
            return {**error_ack(refused), "last_client_seq": refused.last_client_seq}
        if sent.created:  # emitted after the commit; a retried send is not broadcast twice
            emit("message", sent.wire, to=room_name(sent.consult_id), namespace=NAMESPACE)
        return {"ok": True, "message": sent.wire, "duplicate": not sent.created}

    @handler
    def on_backfill(self, data: dict[str, Any]) -> dict[str, Any]:
        consult = self._joined_consult(data)
        page = history.messages_page_after(consult, data.get("after_seq", 0))
        return {"ok": True, "messages": [to_wire(m) for m in page.messages], "more": page.more,
                "last_seq": history.last_seq(consult)}

    @handler(authenticate=False)  # the statement proves the session (history.head)
    def on_head(self, data: dict[str, Any]) -> dict[str, Any]:
        """The resync check (every RESYNC_SECONDS, and when the page comes back): the latest stored seq."""
        seq = history.head(self._sender(data), lambda: self._resolve(data), request.sid)
        return {"ok": True, "last_seq": seq}

    @handler
    def on_history(self, data: dict[str, Any]) -> dict[str, Any]:
        consult = self._joined_consult(data)
        page = history.messages_before(consult, data.get("before_seq"))
        return {"ok": True, "messages": [to_wire(m) for m in page.messages], "has_more": page.more}

    @handler
    def on_typing(self, data: dict[str, Any]) -> dict[str, Any]:
        consult = self._joined_consult(data)
        emit("typing", {"user_id": current_user.id, "name": current_user.full_name,
                                 "typing": bool(data.get("typing"))},
             to=room_name(consult.id), skip_sid=request.sid, namespace=NAMESPACE)
        return {"ok": True}

    @handler
    def on_read(self, data: dict[str, Any]) -> dict[str, Any]:
        consult = self._joined_consult(data)
        seq = receipts.mark_read(current_user, consult, data.get("seq"))
        emit("read", {"user_id": current_user.id, "seq": seq},
             to=room_name(consult.id), namespace=NAMESPACE)
        return {"ok": True, "seq": seq}
