"""Accounts: registration, approval, login, logout and password changes."""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass, replace
from datetime import timedelta
from zoneinfo import available_timezones

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app, render_template
from sqlalchemy import func, select, update

from ..audit.services import record
from ..errors import Conflict, DomainError, Forbidden, NotFound, ValidationFailed
from ..extensions import db
from ..i18n import N_, current_locale, speaking, translate, user_locale
from ..mail import external_url, send_mail_later
from ..models import SPECIALTIES, AccountStatus, Facility, PasswordReset, Role, User, utcnow
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


# An account's status as a word in a sentence ("this one is pending") and as a badge ("Pending").
STATUS_WORDS = {
    AccountStatus.PENDING: N_("pending"),
    AccountStatus.APPROVED: N_("approved"),
    AccountStatus.REJECTED: N_("rejected"),
    AccountStatus.SUSPENDED: N_("suspended"),
}
STATUS_LABELS = {
    AccountStatus.PENDING: N_("Pending"),
    AccountStatus.APPROVED: N_("Approved"),
    AccountStatus.REJECTED: N_("Rejected"),
    AccountStatus.SUSPENDED: N_("Suspended"),
}


def status_word(status: AccountStatus) -> str:
    """The status in the current language, as it reads inside a sentence."""
    return translate(STATUS_WORDS[status])


def status_label(status: AccountStatus) -> str:
    """The status in the current language, as a badge or column value."""
    return translate(STATUS_LABELS[status])


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
        raise ValidationFailed("Passwords need at least %(count)s characters.",
                               fields={"password": "too short"}, count=MIN_PASSWORD_LENGTH)
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
    locale: str | None = None  # the language the clinician registered in (mail, notifications)


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
        locale=reg.locale,
    )
    db.session.add(user)
    db.session.flush()
    return user


def register(reg: Registration) -> User | None:
    """Register a clinician (the account waits for approval); None when the email is taken.

    The caller says the same thing either way, so registration reveals no account: a taken
    address creates nothing, and its owner is told by email (after the commit).
    """
    if reg.role == Role.COORDINATOR:  # create_user() skips the profile checks for coordinators
        raise ValidationFailed("Coordinator accounts are created by an administrator.",
                               fields={"role": "not allowed"})
    _check_password_strength(reg.password, reg.email.strip().lower())
    _validate_profile(reg)
    owner = find_by_email(reg.email)
    if owner is not None:
        hash_password(reg.password)  # the same work as a real registration: no timing oracle
        record("account.registration_for_taken_email", target=f"user:{owner.id}")
        db.session.commit()
        with speaking(user_locale(owner)):  # in the owner's language, not the visitor's
            send_mail_later(owner.email, translate(N_("Someone tried to register with your email address")),
                            render_template("mail/registration_taken.txt", user=owner,
                                            login_url=external_url("auth.login"),
                                            forgot_url=external_url("auth.forgot_password")))
        return None
    if reg.locale is None:
        reg = replace(reg, locale=current_locale())
    user = create_user(reg)
    record("account.registered", actor=user, target=f"user:{user.id}",
           detail={"role": user.role.value})
    from ..notifications.services import coordinators, notify

    notify(coordinators(), "account.registered", {"name": user.full_name, "role": user.role.value})
    db.session.commit()
    with speaking(user_locale(user)):
        send_mail_later(user.email, translate(N_("Your Huizhen registration was received")),
                        render_template("mail/registration_received.txt", user=user))
    return user


def authenticate(email: str, password: str) -> User:
    """Check credentials; the same error whether the account exists or not."""
    user = find_by_email(email or "")
    failed = LoginFailed(N_("The email or password is incorrect."))
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
            AccountStatus.PENDING: N_("Your registration is waiting for a coordinator's approval."),
            AccountStatus.REJECTED: N_("Your registration was not approved. Contact your coordinator."),
            AccountStatus.SUSPENDED: N_("Your account is suspended. Contact your coordinator."),
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
        raise Conflict("This registration was already %(status)s.", status=status_word(user.status))
    return user


def approve(coordinator: User, user_id: int) -> User:
    """A coordinator verifies a clinician and lets them sign in."""
    user = _reviewable(user_id, coordinator)
    user.status = AccountStatus.APPROVED
    user.reviewed_at = utcnow()
    user.reviewed_by_id = coordinator.id
    record("account.approved", actor=coordinator, target=f"user:{user.id}")
    from ..notifications.services import notify

    notify([user], "account.approved")
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
    from ..notifications.services import notify

    notify([user], "account.rejected", {"note": user.review_note})
    db.session.commit()
    return user


def pending_registrations() -> list[User]:
    """Registrations waiting for review, oldest first."""
    return list(db.session.scalars(
        select(User).where(User.status == AccountStatus.PENDING).order_by(User.created_at)
    ))


# --- suspension -----------------------------------------------------------------------------------


def _managed_account(coordinator: User, user_id: int) -> User:
    if coordinator.role != Role.COORDINATOR:
        raise Forbidden("Only coordinators manage accounts.")
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("No such account.")
    if user.id == coordinator.id:
        raise Conflict("You cannot suspend or reset your own account here.")
    return user


def suspend(coordinator: User, user_id: int, reason: str) -> User:
    """A coordinator suspends an account: its sessions and sockets end at once, everywhere."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("Give a reason for the suspension.", fields={"reason": "required"})
    user = _managed_account(coordinator, user_id)
    if user.status != AccountStatus.APPROVED:
        raise Conflict("Only approved accounts can be suspended; this one is %(status)s.",
                       status=status_word(user.status))
    user.status = AccountStatus.SUSPENDED
    user.review_note = reason[:500]
    user.reviewed_at, user.reviewed_by_id = utcnow(), coordinator.id
    sessions.end_all(user, "suspended")
    record("account.suspended", actor=coordinator, target=f"user:{user.id}", detail={"reason": reason[:500]})
    db.session.commit()
    sessions.sockets_ended(user)
    return user


def reinstate(coordinator: User, user_id: int) -> User:
    """A coordinator lifts a suspension; the clinician signs in again."""
    user = _managed_account(coordinator, user_id)
    if user.status != AccountStatus.SUSPENDED:
        raise Conflict("Only suspended accounts can be reinstated; this one is %(status)s.",
                       status=status_word(user.status))
    user.status = AccountStatus.APPROVED
    user.reviewed_at, user.reviewed_by_id = utcnow(), coordinator.id
    record("account.reinstated", actor=coordinator, target=f"user:{user.id}")
    db.session.commit()
    return user


# --- password reset -------------------------------------------------------------------------------


class ResetLinkInvalid(DomainError):
    status = 400
    code = "reset_link_invalid"


def _new_reset(user: User, issued_by: User | None = None) -> str:
    token = secrets.token_urlsafe(32)
    now = utcnow()
    minutes = int(current_app.config["PASSWORD_RESET_MINUTES"])
    db.session.add(PasswordReset(token_hash=sessions.hash_key(token), user_id=user.id, created_at=now,
                                 expires_at=now + timedelta(minutes=minutes),
                                 issued_by_id=issued_by.id if issued_by else None))
    return token


def request_password_reset(email: str) -> None:
    """Email a single-use reset link if an approved account has this address; silent otherwise."""
    user = find_by_email(email or "")
    if user is None or user.status != AccountStatus.APPROVED:
        record("auth.password_reset_requested", detail={"email": (email or "")[:254].lower(), "sent": False})
        db.session.commit()
        return
    token = _new_reset(user)
    record("auth.password_reset_requested", actor=user, target=f"user:{user.id}", detail={"sent": True})
    db.session.commit()
    link = external_url("auth.reset_password", token=token)
    with speaking(user_locale(user)):  # in the account's language
        send_mail_later(user.email, translate(N_("Reset your Huizhen password")),
                        render_template("mail/password_reset.txt", user=user, link=link,
                                        minutes=current_app.config["PASSWORD_RESET_MINUTES"]))


def issue_reset_link(coordinator: User, user_id: int) -> tuple[User, str]:
    """A coordinator makes a reset link to hand to a clinician (where email is not set up)."""
    user = _managed_account(coordinator, user_id)
    if user.status != AccountStatus.APPROVED:
        raise Conflict("Only approved accounts get reset links; this one is %(status)s.",
                       status=status_word(user.status))
    token = _new_reset(user, issued_by=coordinator)
    record("account.reset_link_issued", actor=coordinator, target=f"user:{user.id}")
    db.session.commit()
    return user, external_url("auth.reset_password", token=token)


def _valid_reset(token: str) -> PasswordReset:
    invalid = ResetLinkInvalid(N_("This reset link is invalid, already used or expired. Ask for a new one."))
    if not isinstance(token, str) or not token or len(token) > 200:
        raise invalid
    reset = db.session.scalar(select(PasswordReset).where(PasswordReset.token_hash == sessions.hash_key(token)))
    if reset is None or reset.used_at is not None or reset.expires_at <= utcnow():
        raise invalid
    user = db.session.get(User, reset.user_id)
    if user is None or user.status != AccountStatus.APPROVED:
        raise invalid
    return reset


def check_reset_link(token: str) -> None:
    """Refuse an unknown, used or expired reset link before showing the form."""
    _valid_reset(token)


def reset_password(token: str, new: str) -> User:
    """Set a new password through a reset link: used once, and every session of the user ends."""
    reset = _valid_reset(token)
    user = db.session.get(User, reset.user_id)
    assert user is not None
    _check_password_strength(new, user.email)
    now = utcnow()
    claimed = db.session.execute(update(PasswordReset).where(
        PasswordReset.id == reset.id, PasswordReset.used_at.is_(None)).values(used_at=now))
    if claimed.rowcount != 1:  # another request used it meanwhile
        db.session.rollback()
        raise ResetLinkInvalid(N_("This reset link is invalid, already used or expired. Ask for a new one."))
    db.session.execute(update(PasswordReset).where(  # every other outstanding link of the user dies too
        PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None)).values(used_at=now))
    user.password_hash = hash_password(new)
    sessions.end_all(user, "password_reset")
    record("auth.password_reset", actor=user, target=f"user:{user.id}")
    db.session.commit()
    sessions.sockets_ended(user)
    return user
