"""The /call Socket.IO namespace: WebRTC signaling between a consult's call participants.

Two people talk over one peer connection; three or more over a full mesh, one connection per
pair, each negotiating on its own: every signal names its target user (``to``) and is relayed
only to that user's connections in the call.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask, current_app, request
from flask_login import current_user
from flask_socketio import Namespace, join_room, leave_room

from ..audit.services import record_refusal
from ..consults import policy
from ..errors import NotFound, ValidationFailed
from ..extensions import db
from ..models import Consult, User
from ..presence import Snapshot
from ..realtime import Connections, accept_connection, connections, emit, forget_connection, handler
from ..rooms import services as rooms
from ..sessionbus import register_namespace
from . import services

NAMESPACE = "/call"
log = logging.getLogger(__name__)


def call_room(consult_id: int) -> str:
    """The Socket.IO room of one consult's call."""
    return f"call:{consult_id}"


JOIN_LOCKS_KEY = "huizhen.call_join_locks"
JOIN_LOCK_STRIPES = 64


def _join_lock(consult_id: int) -> threading.Lock:
    """The lock that makes one consult's joins one after the other in this process (striped).

    Two joins handled at once (one thread per WebSocket) could each see the call empty, each
    wait for the other to offer, and the call would never connect; in turn, the later one sees the
    earlier one and offers to it.
    """
    app = current_app._get_current_object()
    locks = app.extensions.get(JOIN_LOCKS_KEY)
    if locks is None:
        locks = app.extensions.setdefault(JOIN_LOCKS_KEY, [threading.Lock() for _ in range(JOIN_LOCK_STRIPES)])
    return locks[consult_id % len(locks)]


def _members() -> Connections:
    """Who is in which consult's call, across nodes when REDIS_URL is set (webapp/presence.py)."""
    return connections(NAMESPACE)


# A connection joined to a call its user may no longer take part in is disconnected (sessionbus).
register_namespace(NAMESPACE, joined=lambda app, sid: connections(NAMESPACE, app).consult_of(sid),
                   entitled=services.may_join)


def call_members(app: Flask) -> Connections:
    """The call table of an app; a party whose node died is announced as having left."""
    table = connections(NAMESPACE, app)
    table.on_change(_vanished)
    return table


def _vanished(consult_id: int, snap: Snapshot) -> None:
    present = {m.user_id for m in snap.members}
    for user_id in sorted({m.user_id for m in snap.vanished} - present):
        emit("peer-left", {"user_id": user_id, "reason": _gone(consult_id, user_id)}, to=call_room(consult_id),
             namespace=NAMESPACE)


def _gone(consult_id: int, user_id: int) -> str:
    """Why someone's last connection to a call went: "removed" when they may no longer join it
    (the others close their connection to them at once: no more of the patient's audio and video
    reaches them), else "disconnected" (they may come back; a trainee's raised hand and leave to
    speak are given back either way)."""
    try:
        user, consult = db.session.get(User, user_id), db.session.get(Consult, consult_id)
        if user is None or consult is None or not services.may_join(user, consult):
            return "removed"
        if services.leave_speech(user, consult):
            _announce_hands(consult)
        return "disconnected"
    except Exception:  # the database is away: the others keep waiting for them, as before
        db.session.rollback()
        log.exception("could not tell why user %s left the call of consult %s", user_id, consult_id)
        return "disconnected"


def _user_sids(consult_id: int, user_id: int) -> list[str]:
    """The connections of one user in a consult's call (on any node), but this one."""
    return [m.sid for m in _members().snapshot(consult_id).members if m.user_id == user_id and m.sid != request.sid]


def _target(data: dict[str, Any]) -> int | None:
    target = data.get("to")
    if target is not None and (not isinstance(target, int) or isinstance(target, bool) or target <= 0):
        raise ValidationFailed("%(name)s must be a user id.", name="to")
    return target


def _announce_hands(consult: Consult) -> None:
    """Every page in the call gets the raised hands and leaves to speak (after the commit)."""
    emit("hands", {"hands": services.hands(consult)}, to=call_room(consult.id), namespace=NAMESPACE)


def _call_consult(ref: Any) -> Consult:
    consult = rooms.member_consult(current_user, ref)
    if not policy.is_participant(current_user, consult):
        record_refusal("call.access_denied", actor=current_user, consult=consult)
        raise NotFound("No such consult.")
    services.require_call_party(current_user, consult)
    return consult


class CallNamespace(Namespace):
    """Join a call, relay offers/answers/ICE candidates (one by one, or a batch in one "candidates"
    signal) and media state to the other party."""

    def on_connect(self, auth: Any = None) -> None:
        accept_connection(NAMESPACE)

    def on_disconnect(self, reason: Any = None) -> None:
        forget_connection(NAMESPACE)
        left = _members().remove(request.sid)
        # A socket that already came back (a resumed join on a new connection) may be seen to go
        # only now, after its ping timeout: its user is still in the call, so nobody left
        if left is not None and left[1] not in _members().others(left[0], request.sid):
            emit("peer-left", {"user_id": left[1], "reason": _gone(left[0], left[1])},
                 to=call_room(left[0]), namespace=NAMESPACE)

    def _joined(self, data: dict[str, Any]) -> Consult:
        consult = _call_consult(data.get("ref"))
        if _members().consult_of(request.sid) != consult.id:
            raise ValidationFailed("Join the call before signaling.")
        return consult

    @handler
    def on_join(self, data: dict[str, Any]) -> dict[str, Any]:
        consult = _call_consult(data.get("ref"))
        offer = data.get("offer")
        # A resumed join: our signaling socket came back while the call itself held (or is being
        # restarted over ICE): rejoin the call's room without asking the others to rebuild theirs
        resume = data.get("resume", False)
        if not isinstance(resume, bool):
            raise ValidationFailed("%(name)s must be true or false.", name="resume")
        if resume and offer is not None:
            raise ValidationFailed("A resumed join carries no offer.")
        if offer is not None:
            if not isinstance(offer, dict) or offer.get("type") != "offer":
                raise ValidationFailed("The offer sent with a join must be an SDP offer.")
            offer = services.validate_signal(offer)
            services.check_media(current_user, consult, offer)
        # No database transaction is held while waiting for the turn: on SQLite the write lock is
        # taken at BEGIN, and the join holding the turn needs it to commit the call record. The
        # commit expires what was read so far: inside the turn the consult (its participants, the
        # user) is read again, and the turn decides on that, not on what was true before waiting.
        consult_id = consult.id
        turn = _join_lock(consult_id)
        db.session.commit()
        with turn:  # who is there, who offers and the announcement, in one turn
            consult = db.session.get(Consult, consult_id, populate_existing=True)
            if consult is None:
                raise NotFound("No such consult.")
            present = {m.user_id for m in _members().snapshot(consult_id).members if m.sid != request.sid}
            # caps, membership, the call record, the offer's media (a leave to speak may have been
            # withdrawn while waiting, or cleared by a new call) and the audit entry: one commit, then
            # no database round trip until the offer has gone (the joined call carries what the ack needs)
            joined = services.join_call(current_user, consult, present, offer=offer)
            previous = _members().consult_of(request.sid)
            if previous is not None and previous != consult_id:
                leave_room(call_room(previous))
            join_room(call_room(consult_id))
            _members().add(request.sid, consult_id, joined.user_id)
            # Each member's politeness towards the newcomer (perfect negotiation, per pair)
            emit("peer-resumed" if resume else "peer-joined", joined.announcement(),
                 to=call_room(consult_id), skip_sid=request.sid, namespace=NAMESPACE)
            # The offer sent with a join is for a two-party call: the one other person in it takes it
            # (after peer-joined, so they have reset their connection). With more, the joiner offers
            # to each in turn once it knows who is there.
            offered_to = joined.others[0] if offer is not None and len(joined.others) == 1 else None
            if offered_to is not None:
                for sid in _user_sids(consult_id, offered_to):
                    emit("signal", {**offer, "from": joined.user_id, "to": offered_to}, to=sid, namespace=NAMESPACE)
            return {"ok": True, "me": joined.user_id, "call_id": joined.call_id, "ice_servers": joined.ice_servers,
                    "peers": _members().others(consult_id, request.sid), "people": joined.people,
                    "polite": joined.polite, "polite_to": joined.polite_to, "offered_to": offered_to,
                    "hands": joined.hands, "sends": joined.sends}

    @handler
    def on_signal(self, data: dict[str, Any]) -> dict[str, Any]:
        consult = self._joined(data)
        clean = services.validate_signal(data)
        target = _target(data)
        services.check_media(current_user, consult, clean)
        clean["from"] = current_user.id
        if target is None:  # to everyone else in the call (a client of the two-party protocol)
            emit("signal", clean, to=call_room(consult.id), skip_sid=request.sid, namespace=NAMESPACE)
            return {"ok": True}
        clean["to"] = target
        sids = _user_sids(consult.id, target)
        for sid in sids:
            emit("signal", clean, to=sid, namespace=NAMESPACE)
        return {"ok": True, "delivered": bool(sids)}

    @handler
    def on_state(self, data: dict[str, Any]) -> dict[str, Any]:
        consult = self._joined(data)
        state = services.validate_state(data)
        emit("peer-state", {"user_id": current_user.id, **state}, to=call_room(consult.id),
             skip_sid=request.sid, namespace=NAMESPACE)
        return {"ok": True}

    @handler
    def on_stats(self, data: dict[str, Any]) -> dict[str, Any]:
        consult = self._joined(data)
        call = services.record_stats(current_user, consult, data)
        return {"ok": True, "call_id": call.id}

    @handler
    def on_raise_hand(self, data: dict[str, Any]) -> dict[str, Any]:
        consult = self._joined(data)
        raised = data.get("raised", True)
        if not isinstance(raised, bool):
            raise ValidationFailed("%(name)s must be true or false.", name="raised")
        if services.raise_hand(current_user, consult, raised):
            _announce_hands(consult)
        return {"ok": True}

    @handler
    def on_allow_speech(self, data: dict[str, Any]) -> dict[str, Any]:
        consult = self._joined(data)
        allow = data.get("allow", True)
        if not isinstance(allow, bool):
            raise ValidationFailed("%(name)s must be true or false.", name="allow")
        present = {m.user_id for m in _members().snapshot(consult.id).members}
        services.allow_speech(current_user, consult, data.get("user_id"), allow, present)
        _announce_hands(consult)
        return {"ok": True}

    @handler
    def on_leave(self, data: dict[str, Any]) -> dict[str, Any]:
        consult = self._joined(data)
        if services.leave_speech(current_user, consult):
            _announce_hands(consult)
        _members().remove(request.sid)
        # The call goes on while two others are still talking to each other (a mesh call); with
        # one left, waiting alone, it ended as a two-party call does
        staying = {uid for uid in _members().others(consult.id, request.sid) if uid != current_user.id}
        services.end_call(current_user, consult, others_stay=len(staying) >= 2)
        leave_room(call_room(consult.id))
        emit("peer-left", {"user_id": current_user.id, "reason": "hung_up"}, to=call_room(consult.id),
             namespace=NAMESPACE)
        return {"ok": True}
