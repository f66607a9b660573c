"""Accounts: registration, sign-in, password hashing and changes, session ending, review."""

from __future__ import annotations

from dataclasses import replace

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from tests.conftest import PASSWORD
from webapp.auth import services as accounts
from webapp.auth.services import AccountNotActive, LoginFailed, Registration
from webapp.errors import Conflict, DomainError, NotFound, ValidationFailed
from webapp.extensions import db
from webapp.models import AccountStatus, AuditEvent, Role, User


def refused(exc_type: type[DomainError], fn, *args, **kwargs) -> DomainError:
    """Call a use case that must refuse, then roll back as the routes do."""
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    db.session.rollback()
    return info.value


def users() -> list[User]:
    return list(db.session.scalars(select(User).order_by(User.id).execution_options(populate_existing=True)))


def reload(user: User) -> User:
    return db.session.scalars(
        select(User).where(User.id == user.id).execution_options(populate_existing=True)).one()


def events(action: str) -> list[AuditEvent]:
    return list(db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


@pytest.fixture
def reg(make) -> Registration:
    facility = make.facility("Dingxi Township Health Centre")
    return Registration(
        email="  Li.Wei@Clinic.Example  ", password="a-long-enough-secret", full_name="  Li Wei ",
        role=Role.RURAL_DOCTOR, facility_id=facility.id, licence_number=" 110101199001 ",
        timezone="Asia/Shanghai", languages=("zh-CN",),
    )


# --- register ---------------------------------------------------------------------------------------


def test_register_creates_a_pending_account(reg):
    user = accounts.register(reg)
    [stored] = users()
    assert stored.id == user.id
    assert stored.email == "li.wei@clinic.example"
    assert stored.full_name == "Li Wei" and stored.licence_number == "110101199001"
    assert stored.status == AccountStatus.PENDING and not stored.is_active
    assert stored.role == Role.RURAL_DOCTOR and stored.specialty is None
    assert stored.password_hash.startswith("$argon2id$")
    assert "a-long-enough-secret" not in stored.password_hash
    assert PasswordHasher().verify(stored.password_hash, "a-long-enough-secret")
    [event] = events("account.registered")
    assert (event.actor_id, event.target, event.detail) == (user.id, f"user:{user.id}",
                                                           {"role": "rural_doctor"})
    assert accounts.pending_registrations() == [stored]


def test_register_a_specialist_with_a_specialty(reg):
    accounts.register(replace(reg, role=Role.SPECIALIST, specialty="neurology", languages=("en", "zh-CN")))
    [stored] = users()
    assert (stored.role, stored.specialty, stored.language_list) == (
        Role.SPECIALIST, "neurology", ["en", "zh-CN"])


def test_a_rural_doctor_has_no_specialty(reg):
    accounts.register(replace(reg, specialty="cardiology"))
    assert users()[0].specialty is None


def test_duplicate_email_creates_nothing_whatever_its_case(reg):
    """Registration reveals no account: a taken email is not an error, it just creates nothing."""
    first = accounts.register(reg)
    assert accounts.register(replace(reg, email="LI.WEI@clinic.EXAMPLE", full_name="Someone else")) is None
    assert [u.id for u in users()] == [first.id] and users()[0].full_name == first.full_name
    assert [e.target for e in events("account.registration_for_taken_email")] == [f"user:{first.id}"]


@pytest.mark.parametrize(("change", "field"), [
    ({"role": Role.COORDINATOR}, "role"),
    ({"role": Role.SPECIALIST, "specialty": None}, "specialty"),
    ({"role": Role.SPECIALIST, "specialty": "astrology"}, "specialty"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({"timezone": ""}, "timezone"),
    ({"password": "short1234"}, "password"),
    ({"password": "li.wei@clinic.example"}, "password"),
    ({"facility_id": 999_999}, "facility_id"),
    ({"languages": ()}, "languages"),
    ({"languages": ("fr",)}, "languages"),
    ({"licence_number": "   "}, "licence_number"),
], ids=["coordinator", "specialist-without-specialty", "unknown-specialty", "bad-timezone",
        "no-timezone", "short-password", "password-is-email", "unknown-facility", "no-language",
        "unknown-language", "no-licence"])
def test_register_refuses_bad_profiles(reg, change, field):
    exc = refused(ValidationFailed, accounts.register, replace(reg, **change))
    assert field in exc.fields
    assert users() == []
    assert events("account.registered") == []


def test_password_length_boundary(reg):
    assert accounts.MIN_PASSWORD_LENGTH == 10
    refused(ValidationFailed, accounts.register, replace(reg, password="x" * 9))
    accounts.register(replace(reg, password="x" * 10))
    assert len(users()) == 1


# --- authenticate -------------------------------------------------------------------------------------


def test_unknown_email_and_wrong_password_fail_the_same_way(make):
    user = make.rural(email="known@test.example")
    unknown = refused(LoginFailed, accounts.authenticate, "Nobody@Test.Example", PASSWORD)
    wrong = refused(LoginFailed, accounts.authenticate, "known@test.example", "not-the-password")
    empty = refused(LoginFailed, accounts.authenticate, "known@test.example", "")
    assert unknown.message == wrong.message == empty.message == "The email or password is incorrect."
    assert unknown.status == wrong.status == 401
    assert unknown.fields == wrong.fields == {}
    failures = events("auth.login_failed")
    assert [(e.actor_id, e.detail) for e in failures] == [
        (None, {"email": "nobody@test.example"}), (user.id, {}), (user.id, {})]
    assert reload(user).last_login_at is None
    assert events("auth.login") == []


def test_successful_sign_in_is_recorded(make):
    user = make.rural(email="doctor@test.example")
    signed_in = accounts.authenticate("  DOCTOR@test.example ", PASSWORD)
    assert signed_in.id == user.id
    stored = reload(user)
    assert stored.last_login_at is not None
    [event] = events("auth.login")
    assert (event.actor_id, event.actor_email, event.target) == (user.id, "doctor@test.example",
                                                                 f"user:{user.id}")
    assert event.at >= stored.last_login_at


@pytest.mark.parametrize(("status", "says"), [
    (AccountStatus.PENDING, "waiting for a coordinator's approval"),
    (AccountStatus.REJECTED, "not approved"),
    (AccountStatus.SUSPENDED, "suspended"),
])
def test_accounts_not_approved_cannot_sign_in(make, status, says):
    user = make.specialist(status=status)
    exc = refused(AccountNotActive, accounts.authenticate, user.email, PASSWORD)
    assert exc.status == 403 and exc.code == "account_not_active"
    assert says in exc.message
    assert reload(user).last_login_at is None
    assert events("auth.login") == []
    # with a wrong password they learn nothing about the account's state
    wrong = refused(LoginFailed, accounts.authenticate, user.email, "not-the-password")
    assert wrong.message == "The email or password is incorrect."


def test_every_stored_password_is_an_argon2id_hash(make):
    for user in (make.rural(), make.specialist(), make.coordinator()):
        assert reload(user).password_hash.startswith("$argon2id$")
    assert accounts.hash_password(PASSWORD).startswith("$argon2id$")
    assert accounts.hash_password(PASSWORD) != accounts.hash_password(PASSWORD)  # salted


# --- passwords and sessions ---------------------------------------------------------------------------


def test_change_password_rotates_the_login_token(make):
    user = make.rural()
    old_token, old_hash = user.login_token, user.password_hash

    accounts.change_password(user, PASSWORD, "a-brand-new-passphrase")

    stored = reload(user)
    assert stored.login_token != old_token
    assert stored.password_hash != old_hash and stored.password_hash.startswith("$argon2id$")
    refused(LoginFailed, accounts.authenticate, user.email, PASSWORD)
    assert accounts.authenticate(user.email, "a-brand-new-passphrase").id == user.id
    assert [e.actor_id for e in events("auth.password_changed")] == [user.id]


@pytest.mark.parametrize(("current", "new", "field"), [
    ("wrong-current-password", "a-brand-new-passphrase", "current_password"),
    (PASSWORD, "short", "password"),
])
def test_change_password_refusals_change_nothing(make, current, new, field):
    user = make.rural()
    old_token, old_hash = user.login_token, user.password_hash
    exc = refused(ValidationFailed, accounts.change_password, user, current, new)
    assert field in exc.fields
    stored = reload(user)
    assert (stored.login_token, stored.password_hash) == (old_token, old_hash)
    assert events("auth.password_changed") == []


def test_end_sessions_rotates_the_login_token(make):
    user = make.specialist()
    tokens = {user.login_token}
    for _ in range(2):
        accounts.end_sessions(user, "logout")
        tokens.add(reload(user).login_token)
    assert len(tokens) == 3
    assert reload(user).get_id() == user.login_token
    assert len(events("auth.logout")) == 2


# --- review by a coordinator --------------------------------------------------------------------------


def test_approve_lets_the_clinician_sign_in(make):
    coordinator = make.coordinator()
    user = make.specialist(status=AccountStatus.PENDING)
    accounts.approve(coordinator, user.id)
    stored = reload(user)
    assert stored.status == AccountStatus.APPROVED
    assert stored.reviewed_by_id == coordinator.id and stored.reviewed_at is not None
    assert accounts.authenticate(user.email, PASSWORD).id == user.id
    assert [e.target for e in events("account.approved")] == [f"user:{user.id}"]
    assert accounts.pending_registrations() == []


def test_reject_needs_a_note(make):
    coordinator = make.coordinator()
    user = make.rural(status=AccountStatus.PENDING)
    exc = refused(ValidationFailed, accounts.reject, coordinator, user.id, "   ")
    assert exc.fields == {"note": "required"}
    assert reload(user).status == AccountStatus.PENDING

    accounts.reject(coordinator, user.id, "  Licence number not found in the register.  ")
    stored = reload(user)
    assert stored.status == AccountStatus.REJECTED
    assert stored.review_note == "Licence number not found in the register."
    assert events("account.rejected")[0].detail == {"note": "Licence number not found in the register."}


def test_a_registration_is_reviewed_only_once(make):
    coordinator = make.coordinator()
    approved = make.rural(status=AccountStatus.PENDING)
    rejected = make.rural(status=AccountStatus.PENDING)
    accounts.approve(coordinator, approved.id)
    accounts.reject(coordinator, rejected.id, "Unknown clinic")

    for call in (lambda: accounts.approve(coordinator, approved.id),
                 lambda: accounts.reject(coordinator, approved.id, "Changed my mind"),
                 lambda: accounts.approve(coordinator, rejected.id)):
        exc = refused(Conflict, call)
        assert "already" in exc.message
    assert reload(approved).status == AccountStatus.APPROVED
    assert reload(rejected).status == AccountStatus.REJECTED
    assert len(events("account.approved")) == len(events("account.rejected")) == 1
    refused(NotFound, accounts.approve, coordinator, 999_999)


def test_pending_registrations_oldest_first(make):
    first = make.rural(status=AccountStatus.PENDING)
    make.rural()
    second = make.specialist(status=AccountStatus.PENDING)
    assert [u.id for u in accounts.pending_registrations()] == [first.id, second.id]
