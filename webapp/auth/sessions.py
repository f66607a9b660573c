"""Server-side sessions: opened at sign-in, judged idle on the server, ended everywhere at once."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select, update

from ..audit.services import record
from ..extensions import db
from ..models import AccountStatus, User, UserSession, utcnow
from ..models.user import new_login_token


def hash_key(key: str) -> str:
    """The stored form of a session key or reset token (SHA-256, hex)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def idle_limit() -> timedelta:
    """How long a session may go without activity (IDLE_TIMEOUT_MINUTES)."""
    return timedelta(seconds=float(current_app.config["IDLE_TIMEOUT_MINUTES"]) * 60)


def idle_cutoff(now: datetime | None = None) -> datetime:
    """Sessions last active before this time have expired."""
    return (now or utcnow()) - idle_limit()


def touch_every() -> float:
    """Seconds between two writes of a session's last activity (about once a minute)."""
    return min(60.0, idle_limit().total_seconds() / 4)


def open_session(user: User) -> str:
    """Add a server-side session for a user who just proved who they are (no commit).

    The key is also set on the user, so that login_user() stores it in the cookies.
    """
    key = secrets.token_urlsafe(32)
    now = utcnow()
    db.session.add(UserSession(key_hash=hash_key(key), user_id=user.id, created_at=now, last_seen_at=now))
    user.session_key = key
    return key


def start(user: User) -> str:
    """Open a server-side session and commit it; returns its key."""
    key = open_session(user)
    db.session.commit()
    return key


@dataclass(frozen=True)
class Loaded:
    """The user behind a session key, and whether that session has gone idle."""

    user: User
    session: UserSession
    expired: bool


def load(key: str) -> Loaded | None:
    """The approved user of an open session, or None (ended, unknown, or account not active)."""
    if not isinstance(key, str) or not key or len(key) > 200:
        return None
    row = db.session.execute(
        select(User, UserSession).join(UserSession, UserSession.user_id == User.id)
        .where(UserSession.key_hash == hash_key(key), UserSession.ended_at.is_(None))
    ).first()
    if row is None or not row[0].is_active:
        return None
    user, session = row
    user.session_key = key
    return Loaded(user, session, expired=session.last_seen_at < idle_cutoff())


def touch(session: UserSession) -> None:
    """Record activity on a session, at most about once a minute."""
    now = utcnow()
    if (now - session.last_seen_at).total_seconds() >= touch_every():
        session.last_seen_at = now
        db.session.commit()


def end_idle(user: User, session: UserSession) -> None:
    """End one session that went idle (audited); its sockets are disconnected everywhere."""
    from ..sessionbus import end_session_sockets

    session.ended_at, session.ended_reason = utcnow(), "idle"
    record("auth.idle_timeout", actor=user, target=f"user:{user.id}")
    db.session.commit()
    end_session_sockets(session.key_hash)


def end_all(user: User, reason: str) -> None:
    """Mark every open session of the user ended (no commit; call sockets_ended() after it)."""
    db.session.execute(update(UserSession).where(UserSession.user_id == user.id, UserSession.ended_at.is_(None))
                       .values(ended_at=utcnow(), ended_reason=reason[:40]))
    user.login_token = new_login_token()


def sockets_ended(user: User) -> None:
    """After the commit that ended a user's sessions: disconnect their sockets on every node."""
    from ..sessionbus import end_user_sockets

    end_user_sockets(user.id)


def live_key_hashes(key_hashes: set[str]) -> set[str]:
    """Which of these sessions are still open, active and of an approved account."""
    if not key_hashes:
        return set()
    return set(db.session.scalars(
        select(UserSession.key_hash).join(User, User.id == UserSession.user_id).where(
            UserSession.key_hash.in_(sorted(key_hashes)), UserSession.ended_at.is_(None),
            UserSession.last_seen_at >= idle_cutoff(), User.status == AccountStatus.APPROVED)
    ))
