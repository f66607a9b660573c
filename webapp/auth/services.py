"""Accounts: registration, approval, login, logout and password changes."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from zoneinfo import available_timezones

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from sqlalchemy import func, select

from ..audit.services import record
from ..errors import Conflict, DomainError, Forbidden, NotFound, ValidationFailed
from ..extensions import db
from ..models import SPECIALTIES, AccountStatus, Facility, Role, User, utcnow
from ..models.user import LANGUAGES
from . import sessions

MIN_PASSWORD_LENGTH = 10
_hashers: dict[bool, PasswordHasher] = {}


class LoginFailed(DomainError):
    status = 401
    code = "login_failed"


class AccountNotActive(DomainError):
    status = 403
    code = "account_not_active"


def hasher() -> PasswordHasher:
    """The argon2id hasher (cheaper parameters under the test config only)."""
    fast = bool(current_app.config.get("ARGON2_FAST"))
    if fast not in _hashers:
        _hashers[fast] = (
            PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1) if fast
            else PasswordHasher()
        )
    return _hashers[fast]


def hash_password(password: str) -> str:
    """Hash a password with argon2id."""
    return hasher().hash(password)


def _check_password_strength(password: str, email: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"Passwords need at least {MIN_PASSWORD_LENGTH} characters.",
            fields={"password": "too short"},
        )
    if password.lower() == email.lower():
        raise ValidationFailed("The password cannot be your email address.",
                               fields={"password": "same as email"})


@dataclass(frozen=True)
class Registration:
    """What a clinician gives when registering."""

    email: str
    password: str
    full_name: str
    role: Role
    facility_id: int
    licence_number: str
    timezone: str
    languages: tuple[str, ...] = ("zh-CN",)
    specialty: str | None = None


def _validate_profile(reg: Registration) -> Facility:
    if reg.role == Role.COORDINATOR:
        raise ValidationFailed("Coordinator accounts are created by an administrator.",
                               fields={"role": "not allowed"})
    facility = db.session.get(Facility, reg.facility_id)
    if facility is None:
        raise ValidationFailed("Choose your facility from the list.", fields={"facility_id": "unknown"})
    if reg.role == Role.SPECIALIST and reg.specialty not in SPECIALTIES:
        raise ValidationFailed("Specialists must name their specialty.", fields={"specialty": "required"})
    if reg.timezone not in available_timezones():
        raise ValidationFailed("Choose a valid time zone.", fields={"timezone": "unknown"})
    if not reg.languages or any(code not in LANGUAGES for code in reg.languages):
        raise ValidationFailed("Choose the languages you consult in.", fields={"languages": "invalid"})
    if not reg.licence_number.strip():
        raise ValidationFailed("Your licence number is required.", fields={"licence_number": "required"})
    return facility


def find_by_email(email: str) -> User | None:
    """The user with this email, case-insensitively."""
    return db.session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))


def create_user(reg: Registration, *, status: AccountStatus = AccountStatus.PENDING) -> User:
    """Add a user to the session after checking the profile (no commit)."""
    email = reg.email.strip().lower()
    _check_password_strength(reg.password, email)
    if reg.role != Role.COORDINATOR:
        _validate_profile(reg)
    if find_by_email(email) is not None:
        raise Conflict("An account with this email already exists. Sign in or reset your password.",
                       fields={"email": "taken"})
    user = User(
        email=email,
        password_hash=hash_password(reg.password),
        full_name=reg.full_name.strip(),
        role=reg.role,
        status=status,
        facility_id=reg.facility_id if reg.facility_id else None,
        specialty=reg.specialty if reg.role == Role.SPECIALIST else None,
        languages=",".join(reg.languages),
        licence_number=reg.licence_number.strip(),
        timezone=reg.timezone,
    )
    db.session.add(user)
    db.session.flush()
    return user


def register(reg: Registration) -> User:
    """Register a clinician; the account waits for a coordinator's approval."""
    if reg.role == Role.COORDINATOR:  # create_user() skips the profile checks for coordinators
        raise ValidationFailed("Coordinator accounts are created by an administrator.",
                               fields={"role": "not allowed"})
    user = create_user(reg)
    record("account.registered", actor=user, target=f"user:{user.id}",
           detail={"role": user.role.value})
    db.session.commit()
    return user


def authenticate(email: str, password: str) -> User:
    """Check credentials; the same error whether the account exists or not."""
    user = find_by_email(email or "")
    failed = LoginFailed("The email or password is incorrect.")
    if user is None:
        with contextlib.suppress(VerificationError):  # same time as a real check: no account oracle
            hasher().verify(_dummy_hash(), password or "x")
        record("auth.login_failed", detail={"email": (email or "")[:254].lower()})
        db.session.commit()
        raise failed
    try:
        hasher().verify(user.password_hash, password or "")
    except (VerificationError, InvalidHashError):
        record("auth.login_failed", actor=user, target=f"user:{user.id}")
        db.session.commit()
        raise failed from None
    if user.status != AccountStatus.APPROVED:
        messages = {
            AccountStatus.PENDING: "Your registration is waiting for a coordinator's approval.",
            AccountStatus.REJECTED: "Your registration was not approved. Contact your coordinator.",
            AccountStatus.SUSPENDED: "Your account is suspended. Contact your coordinator.",
        }
        record("auth.login_blocked", actor=user, target=f"user:{user.id}", detail={"status": user.status.value})
        db.session.commit()
        raise AccountNotActive(messages[user.status])
    if hasher().check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = utcnow()
    sessions.open_session(user)  # user.session_key: what the cookies will carry
    record("auth.login", actor=user, target=f"user:{user.id}")
    db.session.commit()
    return user


_DUMMY: dict[bool, str] = {}


def _dummy_hash() -> str:
    fast = bool(current_app.config.get("ARGON2_FAST"))
    if fast not in _DUMMY:
        _DUMMY[fast] = hasher().hash("not-a-real-password-for-timing")
    return _DUMMY[fast]


def end_sessions(user: User, reason: str, *, actor: User | None = None) -> None:
    """Invalidate every session and remember-me cookie of the user, and their sockets everywhere."""
    sessions.end_all(user, reason)
    record(f"auth.{reason}", actor=actor or user, target=f"user:{user.id}")
    db.session.commit()
    sessions.sockets_ended(user)


def change_password(user: User, current: str, new: str) -> None:
    """Change a password after checking the current one; every session ends, this device gets a new one."""
    try:
        hasher().verify(user.password_hash, current or "")
    except (VerificationError, InvalidHashError):
        raise ValidationFailed("Your current password is incorrect.",
                               fields={"current_password": "incorrect"}) from None
    _check_password_strength(new, user.email)
    user.password_hash = hash_password(new)
    sessions.end_all(user, "password_changed")
    sessions.open_session(user)  # this device stays signed in, under a new session
    record("auth.password_changed", actor=user, target=f"user:{user.id}")
    db.session.commit()
    sessions.sockets_ended(user)


def _reviewable(user_id: int, reviewer: User) -> User:
    if reviewer.role != Role.COORDINATOR:
        raise Forbidden("Only coordinators review registrations.")
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("No such registration.")
    if user.status != AccountStatus.PENDING:
        raise Conflict(f"This registration was already {user.status.value}.")
    return user


def approve(coordinator: User, user_id: int) -> User:
    """A coordinator verifies a clinician and lets them sign in."""
    user = _reviewable(user_id, coordinator)
    user.status = AccountStatus.APPROVED
    user.reviewed_at = utcnow()
    user.reviewed_by_id = coordinator.id
    record("account.approved", actor=coordinator, target=f"user:{user.id}")
    db.session.commit()
    return user


def reject(coordinator: User, user_id: int, note: str) -> User:
    """A coordinator refuses a registration, with a reason."""
    if not note.strip():
        raise ValidationFailed("Give a reason for the rejection.", fields={"note": "required"})
    user = _reviewable(user_id, coordinator)
    user.status = AccountStatus.REJECTED
    user.reviewed_at = utcnow()
    user.reviewed_by_id = coordinator.id
    user.review_note = note.strip()[:500]
    record("account.rejected", actor=coordinator, target=f"user:{user.id}",
           detail={"note": user.review_note})
    db.session.commit()
    return user


def pending_registrations() -> list[User]:
    """Registrations waiting for review, oldest first."""
    return list(db.session.scalars(
        select(User).where(User.status == AccountStatus.PENDING).order_by(User.created_at)
    ))
