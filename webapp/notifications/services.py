"""Notification use cases: notify (inside the caller's transaction), the list, mark read, preferences."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app, has_app_context, has_request_context
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from .. import hotdb
from ..consults import policy
from ..errors import NotFound, ValidationFailed
from ..extensions import db
from ..i18n import speaking, user_locale
from ..models import (
    AccountStatus,
    Consult,
    Delivery,
    Notification,
    NotificationPreference,
    Role,
    User,
    utcnow,
)
from . import texts

PENDING_KEY = "huizhen.notify_pending"  # session.info: what to emit once the transaction commits
NAMESPACE = "/notify"
CHAT_QUIET = timedelta(minutes=5)  # at most one chat notification per consult and recipient in this time
WAITING_QUIET = timedelta(minutes=10)
WAITING_BEFORE = timedelta(minutes=15)  # "is waiting" counts from this long before the booked time


def user_room(user_id: int) -> str:
    """The Socket.IO room of one user's connections (every process, through the message queue)."""
    return f"user:{user_id}"


def _preference(user_id: int) -> NotificationPreference | None:
    return db.session.get(NotificationPreference, user_id)


def _in_quiet_hours(pref: NotificationPreference | None, tz: str, now: datetime) -> datetime | None:
    """When the user's quiet hours end, if now falls inside them; otherwise None."""
    if pref is None or pref.quiet_start is None or pref.quiet_end is None or pref.quiet_start == pref.quiet_end:
        return None
    try:
        local = now.astimezone(ZoneInfo(tz))
    except Exception:
        local = now
    minute = local.hour * 60 + local.minute
    start, end = pref.quiet_start, pref.quiet_end
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside:
        return None
    ahead = (end - minute) % (24 * 60)
    return now + timedelta(minutes=ahead)


def _channels(user: User, kind: str, pref: NotificationPreference | None) -> list[str]:
    muted = set(pref.muted or []) if pref else set()
    wanted = []
    if user.email and f"email:{kind}" not in muted:
        wanted.append("email")
    if current_app.config.get("NOTIFY_WEBHOOK_URL") and f"webhook:{kind}" not in muted:
        wanted.append("webhook")
    return wanted


def notify(recipients: Iterable[User | None], kind: str, params: dict[str, Any] | None = None, *,
           consult: Consult | None = None, urgent: bool = False, exclude: User | None = None) -> list[Notification]:
    """Add a notification per recipient and its deliveries to the caller's transaction (not committed).

    Call it before the caller's commit: the notifications exist exactly when the change does.
    Stores a kind and parameters (no text); urgent ones ignore quiet hours. Returns them.
    """
    if kind not in texts.TITLES:
        raise ValueError(f"unknown notification kind {kind!r}")
    params = dict(params or {})
    now = utcnow()
    seen: set[int] = set()
    made: list[Notification] = []
    recipients_of: list[User] = []
    for user in recipients:
        if user is None or user.id in seen or (exclude is not None and user.id == exclude.id):
            continue
        seen.add(user.id)
        note = Notification(user_id=user.id, kind=kind, params=params, urgent=urgent,
                            consult_id=consult.id if consult is not None else None, created_at=now)
        pref = _preference(user.id)
        held = None if urgent else _in_quiet_hours(pref, user.timezone, now)
        for channel in _channels(user, kind, pref):
            note.deliveries.append(Delivery(channel=channel, status="pending", attempts=0,
                                            next_attempt_at=held or now))
        db.session.add(note)
        made.append(note)
        recipients_of.append(user)
    if made:
        db.session.flush()
        queue = db.session.info.setdefault(PENDING_KEY, [])
        ref = consult.ref if consult is not None else None
        for note, user in zip(made, recipients_of, strict=True):
            with speaking(user_locale(user)):  # the live bell speaks its recipient's language
                queue.append((note.user_id, _wire(note, ref), unread_count(note.user_id)))
    return made


def _wire(note: Notification, consult_ref: str | None) -> dict[str, Any]:
    """A notification as the bell and the list page show it (no query: built from the row)."""
    if has_request_context():
        href = texts.link(note.kind, consult_ref)
    else:
        with current_app.test_request_context("/"):
            href = texts.link(note.kind, consult_ref)
    tz = note.user.timezone if note.user is not None else None
    return {"id": note.id, "kind": note.kind, "title": texts.title(note.kind, note.params, tz),
            "detail": texts.detail(note.kind, note.params), "link": href, "urgent": note.urgent,
            "created_at": note.created_at.isoformat(), "read": note.read_at is not None}


def wire(note: Notification) -> dict[str, Any]:
    """The display form of a stored notification."""
    return _wire(note, note.consult.ref if note.consult is not None else None)


@event.listens_for(Session, "after_commit")
def _emit_after_commit(session: Session) -> None:
    pending = session.info.pop(PENDING_KEY, None)
    if not pending or not has_app_context():
        return
    from ..realtime import emit

    for user_id, payload, unread in pending:
        emit("notification", {"notification": payload, "unread": unread}, to=user_room(user_id),
             namespace=NAMESPACE)


@event.listens_for(Session, "after_transaction_end")
def _discard_queue(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the outermost transaction ended: emitted (after_commit) or rolled back
        session.info.pop(PENDING_KEY, None)


# --- recipients ------------------------------------------------------------------------------------


def coordinators() -> list[User]:
    """Every approved coordinator."""
    return list(db.session.scalars(select(User).where(
        User.role == Role.COORDINATOR, User.status == AccountStatus.APPROVED).order_by(User.id)))


def parties(consult: Consult) -> list[User]:
    """The consult's active participants (consults.policy), lead specialist first."""
    return policy.participant_users(consult)


# --- the room: written in the transaction of the message or the entry that caused them -----------


def _recent(user_id: int, consult_id: int, kind: str, since: datetime, *,
            params_by: int | None = None) -> datetime | None:
    """When the user was last told of this kind for this consult since then (by params_by), else None."""
    query = select(Notification.created_at, Notification.params).where(
        Notification.consult_id == consult_id, Notification.user_id == user_id,
        Notification.kind == kind, Notification.created_at >= since)
    times = [at for at, p in db.session.execute(query).all()
             if params_by is None or (p or {}).get("by_id") == params_by]
    return max(times, default=None)


class ChatNotices:
    """Per app: what this process knows of the chat notifications, so that a message which cannot
    need one (every party is in the room, or each away party was told less than CHAT_QUIET ago)
    keeps the chat's fast path. The database stays the judge: chat_posted checks it again."""

    PARTIES_TTL = 30.0  # seconds a consult's party ids are reused before they are read again

    def __init__(self) -> None:
        self._parties: dict[int, tuple[float, frozenset[int]]] = {}
        self._told: dict[tuple[int, int], datetime] = {}

    BATCH = 500  # consults whose party ids are read in one statement

    def parties(self, consult_id: int) -> frozenset[int]:
        """The ids of the consult's doctors (read at most every PARTIES_TTL seconds).

        A read also refreshes the other consults known here that are past half their time, in the
        same statement: with hundreds of rooms chatting, one read every PARTIES_TTL / 2 or so
        instead of one per room.
        """
        now = time.monotonic()
        known = self._parties.get(consult_id)
        if known is None or now - known[0] > self.PARTIES_TTL:
            if len(self._parties) > 50_000:
                self._parties.clear()
            due = [consult_id] + [cid for cid, (at, _) in list(self._parties.items())
                                  if cid != consult_id and now - at > self.PARTIES_TTL / 2][:self.BATCH - 1]
            found: dict[int, set[int]] = {cid: set() for cid in due}
            for cid, uid in self._read(due):
                found[cid].add(uid)
            for cid, ids in found.items():
                self._parties[cid] = (now, frozenset(ids))
            known = self._parties[consult_id]
        return known[1]

    @staticmethod
    def _read(consult_ids: list[int]) -> list[tuple[int, int]]:
        """(consult id, user id) of the active participants of these consults."""
        statement = policy.participant_pairs(consult_ids)
        return hotdb.read(lambda conn: [tuple(r) for r in conn.execute(statement)])

    def told(self, consult_id: int, user_id: int, at: datetime) -> None:
        """Remember that the user was told of this consult's chat at that time."""
        if len(self._told) > 100_000:
            self._told.clear()
        self._told[(consult_id, user_id)] = at

    def may_be_due(self, consult_id: int, sender_id: int, present: Iterable[int]) -> bool:
        """Whether a message by sender_id may need a notification (False only when it surely does not)."""
        away = self.parties(consult_id) - set(present) - {sender_id}
        since = utcnow() - CHAT_QUIET
        return any(self._told.get((consult_id, u), datetime.min.replace(tzinfo=since.tzinfo)) < since
                   for u in away)


def chat_notices() -> ChatNotices:
    """This app's ChatNotices."""
    return current_app.extensions.setdefault("huizhen.chat_notices", ChatNotices())


def chat_posted(consult: Consult, sender: User, present_user_ids: Iterable[int]) -> list[Notification]:
    """A chat message is being stored: tell each party not in the room, at most once per consult per
    CHAT_QUIET, in the message's transaction (no commit)."""
    present = set(present_user_ids)
    now = utcnow()
    known = chat_notices()
    away = []
    for user in parties(consult):
        if user.id == sender.id or user.id in present:
            continue
        last = _recent(user.id, consult.id, "chat.message", now - CHAT_QUIET)
        if last is None:
            away.append(user)
        else:
            known.told(consult.id, user.id, last)
    made = notify(away, "chat.message", {"by": sender.full_name, "by_id": sender.id}, consult=consult)
    for note in made:
        known.told(consult.id, note.user_id, now)
    return made


def entered_room(user: User, consult: Consult, present_user_ids: Iterable[int]) -> list[Notification]:
    """Someone enters the room near the booked time: tell the other parties not in it ("is waiting"),
    in the transaction that records the entry (no commit)."""
    appointment = consult.appointment
    now = utcnow()
    if appointment is None or appointment.cancelled_at is not None or user not in parties(consult):
        return []
    if not (appointment.starts_at - WAITING_BEFORE <= now <= appointment.ends_at):
        return []
    present = set(present_user_ids)
    away = [u for u in parties(consult) if u.id != user.id and u.id not in present
            and _recent(u.id, consult.id, "room.waiting", now - WAITING_QUIET, params_by=user.id) is None]
    return notify(away, "room.waiting", {"by": user.full_name, "by_id": user.id}, consult=consult,
                  urgent=True)


# --- the list --------------------------------------------------------------------------------------


def unread_count(user_id: int) -> int:
    """How many notifications the user has not read."""
    return db.session.scalar(select(func.count(Notification.id)).where(
        Notification.user_id == user_id, Notification.read_at.is_(None))) or 0


def list_for(user: User, limit: int = 50) -> list[Notification]:
    """The user's latest notifications, newest first."""
    return list(db.session.scalars(select(Notification).where(Notification.user_id == user.id)
                                   .order_by(Notification.id.desc()).limit(limit)))


def mark_read(user: User, notification_id: int) -> Notification:
    """Mark one of the user's notifications read; another user's is a 404."""
    note = db.session.get(Notification, notification_id)
    if note is None or note.user_id != user.id:
        raise NotFound("No such notification.")
    if note.read_at is None:
        note.read_at = utcnow()
    db.session.commit()
    _emit_count(user.id)
    return note


def mark_all_read(user: User) -> int:
    """Mark every unread notification of the user read; how many were."""
    done = db.session.execute(update(Notification).where(
        Notification.user_id == user.id, Notification.read_at.is_(None)).values(read_at=utcnow())).rowcount
    db.session.commit()
    _emit_count(user.id)
    return done or 0


def _emit_count(user_id: int) -> None:
    """Tell the user's other tabs the new unread count (after the commit)."""
    from ..realtime import emit

    emit("unread", {"unread": unread_count(user_id)}, to=user_room(user_id), namespace=NAMESPACE)


# --- preferences -----------------------------------------------------------------------------------


def preferences_of(user: User) -> NotificationPreference:
    """The user's preferences (defaults when none saved; not added to the session)."""
    return _preference(user.id) or NotificationPreference(user_id=user.id, muted=[])


def save_preferences(user: User, muted: Iterable[str], quiet_start: int | None, quiet_end: int | None,
                     ) -> NotificationPreference:
    """Store which kinds each channel leaves out, and quiet hours (minutes of the day, both or none)."""
    valid = {f"{c}:{k}" for c in ("email", "webhook") for k in texts.KINDS}
    muted = sorted(set(muted))
    if any(m not in valid for m in muted):
        raise ValidationFailed("Unknown notification choice.", fields={"muted": "invalid"})
    if (quiet_start is None) != (quiet_end is None):
        raise ValidationFailed("Give both ends of the quiet hours, or neither.", fields={"quiet_start": "invalid"})
    for value in (quiet_start, quiet_end):
        if value is not None and not 0 <= value < 24 * 60:
            raise ValidationFailed("Quiet hours are times of the day.", fields={"quiet_start": "invalid"})
    pref = _preference(user.id)
    if pref is None:
        pref = NotificationPreference(user_id=user.id)
        db.session.add(pref)
    pref.muted, pref.quiet_start, pref.quiet_end = muted, quiet_start, quiet_end
    db.session.commit()
    return pref
