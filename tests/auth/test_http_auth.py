"""Sign-in, sign-out, registration and passwords over HTTP, and the session guarantees around them:
rotation at login, invalidation at logout (remember-me too), idle sign-out, throttling that does
not reveal accounts, CSRF, safe redirects, security headers, and a production start that refuses
unsafe settings."""

from __future__ import annotations

import html
import re
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urljoin, urlsplit

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from config import ProductionConfig, TestingConfig
from tests.conftest import (
    CSRF_RE,
    PASSWORD,
    csrf_token,
    free_port,
    login,
    mail_text,
    post_form,
    set_last_activity,
)
from webapp import check_production_config, create_app
from webapp.extensions import db
from webapp.models import AccountStatus, AuditEvent, PasswordReset, User, utcnow

NEW_PASSWORD = "a-much-better-passphrase-42"


def reread() -> None:
    db.session.rollback()
    db.session.expire_all()


def flashes(response) -> list[str]:
    return [html.unescape(m) for m in re.findall(
        r'<div class="flash [a-z]+" role="status">(.*?)</div>', response.get_data(as_text=True))]


def lede(response) -> str:
    found = re.search(r'<p class="lede">(.*?)</p>', response.get_data(as_text=True))
    return html.unescape(found.group(1)) if found else ""


def path_of(response) -> str:
    return urlsplit(response.headers["Location"]).path


def cookie(client, name: str) -> str | None:
    found = client.get_cookie(name)
    return found.value if found else None


def is_signed_in(client) -> bool:
    r = client.get("/")
    return r.status_code == 200 and "Sign out" in r.get_data(as_text=True)


def replay(app, **cookies: str):
    """A new browser carrying only the given cookies."""
    fresh = app.test_client()
    for name, value in cookies.items():
        fresh.set_cookie(name, value)
    return fresh


# --- registration and approval -----------------------------------------------------------------------


def test_registration_waits_for_approval_then_login_works(app, make):
    facility = make.facility("Huining Township Health Centre")
    coordinator = make.coordinator(email="coord@test.example")
    client = app.test_client()

    page = client.get("/register")
    assert page.status_code == 200 and "Huining Township Health Centre" in page.get_data(as_text=True)
    r = client.post("/register", data={
        "csrf_token": CSRF_RE.search(page.get_data(as_text=True)).group(1),
        "full_name": "Dr Ma Lin", "email": "Ma.Lin@Example.org", "password": PASSWORD, "confirm": PASSWORD,
        "role": "rural_doctor", "facility_id": str(facility.id), "specialty": "",
        "languages": ["zh-CN", "en"], "licence_number": "620100000123", "timezone": "Asia/Urumqi",
    })
    assert r.status_code == 201, lede(r) or flashes(r)
    assert "Registration received" in r.get_data(as_text=True)
    reread()
    user = db.session.scalar(select(User).where(User.email == "ma.lin@example.org"))
    assert user is not None and user.status == AccountStatus.PENDING
    assert user.timezone == "Asia/Urumqi" and user.language_list == ["zh-CN", "en"]
    assert user.password_hash != PASSWORD and user.password_hash.startswith("$argon2id$")

    r = login(client, "ma.lin@example.org")
    assert r.status_code == 403
    assert "Your registration is waiting for a coordinator's approval." in flashes(r)
    assert not is_signed_in(client)

    coord = app.test_client()
    assert login(coord, coordinator).status_code == 302
    page = coord.get("/admin/registrations")
    assert "Dr Ma Lin" in page.get_data(as_text=True)
    r = coord.post(f"/admin/registrations/{user.id}/approve",
                   data={"csrf_token": CSRF_RE.search(page.get_data(as_text=True)).group(1)})
    assert r.status_code == 302
    reread()
    assert db.session.get(User, user.id).status == AccountStatus.APPROVED

    r = login(client, "MA.LIN@example.org")
    assert r.status_code == 302 and path_of(r) == "/"
    assert is_signed_in(client)


def test_rejected_registration_cannot_sign_in(app, make):
    user = make.rural(status=AccountStatus.REJECTED, email="rejected@test.example")
    client = app.test_client()
    r = login(client, user)
    assert r.status_code == 403 and "was not approved" in " ".join(flashes(r))
    assert not is_signed_in(client)


def test_registration_refuses_duplicates_and_coordinator_role(app, make):
    facility = make.facility()
    make.rural(email="taken@test.example")
    client = app.test_client()
    base = {"full_name": "X", "password": PASSWORD, "confirm": PASSWORD, "role": "rural_doctor",
            "facility_id": str(facility.id), "specialty": "", "languages": ["zh-CN"],
            "licence_number": "1", "timezone": "Asia/Shanghai"}
    r = post_form(client, "/register", {**base, "email": "TAKEN@test.example"}, token_from="/register")
    assert r.status_code == 201 and "already exists" not in r.get_data(as_text=True)  # no account oracle
    r = post_form(client, "/register", {**base, "email": "boss@test.example", "role": "coordinator"},
                  token_from="/register")
    assert r.status_code == 422
    r = post_form(client, "/register", {**base, "email": "short@test.example", "password": "short",
                                        "confirm": "short"}, token_from="/register")
    assert r.status_code == 422
    reread()
    assert db.session.scalar(select(func.count()).select_from(User)) == 1


# --- login errors and throttling ---------------------------------------------------------------------


def test_login_error_is_identical_for_unknown_email_and_wrong_password(app, make):
    make.rural(email="known@test.example")
    wrong = app.test_client()
    unknown = app.test_client()
    r1 = login(wrong, "known@test.example", "not-the-password")
    r2 = login(unknown, "nobody@test.example", "not-the-password")
    assert r1.status_code == r2.status_code == 401
    assert flashes(r1) == flashes(r2) == ["The email or password is incorrect."]

    def normalised(response, email):
        body = response.get_data(as_text=True)
        body = re.sub(r'name="csrf_token"[^>]*value="[^"]+"', "CSRF", body)
        return body.replace(email, "EMAIL")

    assert normalised(r1, "known@test.example") == normalised(r2, "nobody@test.example")
    reread()
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "auth.login_failed")) == 2


@pytest.mark.parametrize("email", ["known@test.example", "nobody@test.example"])
def test_fourth_attempt_in_a_minute_is_throttled(app, make, monkeypatch, email):
    monkeypatch.setitem(app.config, "LOGIN_RATE_LIMIT", "3 per minute")
    make.rural(email="known@test.example")
    client = app.test_client()
    for _ in range(3):
        assert login(client, email, "wrong-password-123").status_code == 401
    r = login(client, email, PASSWORD)  # even the right password
    assert r.status_code == 429
    assert lede(r) == "Too many attempts. Wait a minute and try again."
    assert not is_signed_in(client)
    r = client.post("/login", data={"csrf_token": csrf_token(client), "email": email, "password": "x"},
                    headers={"Accept": "application/json"})
    assert r.status_code == 429 and r.get_json()["error"] == "too_many_requests"
    assert client.get("/login").status_code == 200, "the page itself is not throttled"


def test_throttle_counts_per_email_across_addresses_and_per_address_across_emails(app, make, monkeypatch):
    monkeypatch.setitem(app.config, "LOGIN_RATE_LIMIT", "3 per minute")
    make.rural(email="known@test.example")

    def attempt(address: str, email: str) -> int:
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        return login(client, email, "wrong-password-123").status_code

    assert [attempt(f"10.0.0.{i}", "known@test.example") for i in range(1, 5)] == [401, 401, 401, 429]
    assert [attempt("10.9.9.9", f"user{i}@test.example") for i in range(1, 5)] == [401, 401, 401, 429]
    assert attempt("10.1.1.1", "someone.else@test.example") == 401


# --- sessions ------------------------------------------------------------------------------------------


def test_session_is_rotated_at_login(app, make):
    user = make.rural()
    client = app.test_client()
    token_before = csrf_token(client, "/login")
    before = cookie(client, "session")
    assert before
    r = client.post("/login", data={"csrf_token": token_before, "email": user.email, "password": PASSWORD})
    assert r.status_code == 302
    after = cookie(client, "session")
    assert after and after != before
    assert is_signed_in(client)
    # The pre-login cookie (e.g. one planted by an attacker) does not carry the sign-in.
    assert not is_signed_in(replay(app, session=before))
    # Nor does the pre-login CSRF token still work.
    r = client.post("/consults/new", data={"csrf_token": token_before, "chief_complaint": "x", "save": "1"})
    assert r.status_code == 400


def test_logout_invalidates_session_and_remember_cookies(app, make):
    user = make.rural()
    client = app.test_client()
    assert login(client, user, remember=True).status_code == 302
    session_cookie, remember_cookie = cookie(client, "session"), cookie(client, "remember_token")
    assert session_cookie and remember_cookie
    # Before logout both cookies sign a new browser in (so the checks below mean something).
    assert is_signed_in(replay(app, session=session_cookie))
    assert is_signed_in(replay(app, remember_token=remember_cookie))

    r = post_form(client, "/logout")
    assert r.status_code == 302 and path_of(r) == "/login"
    assert "You have signed out." in flashes(client.get("/login"))
    assert not is_signed_in(client)

    for stolen in (dict(session=session_cookie), dict(remember_token=remember_cookie),
                   dict(session=session_cookie, remember_token=remember_cookie)):
        r = replay(app, **stolen).get("/")
        assert r.status_code == 302 and path_of(r) == "/login", stolen
    reread()
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "auth.logout", AuditEvent.actor_id == user.id)) == 1


def test_logout_needs_post_and_csrf(app, make):
    client = app.test_client()
    login(client, make.rural())
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400
    assert is_signed_in(client)


def test_password_change_signs_out_other_sessions(app, make):
    user = make.rural(email="changer@test.example")
    phone, laptop = app.test_client(), app.test_client()
    assert login(phone, user, remember=True).status_code == 302
    assert login(laptop, user).status_code == 302
    phone_remember = cookie(phone, "remember_token")
    assert is_signed_in(phone) and is_signed_in(laptop)

    r = post_form(laptop, "/account/password", {"current_password": "wrong-password-1",
                                                "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
                  token_from="/account/password")
    assert r.status_code == 422 and "current password is incorrect" in " ".join(flashes(r))
    assert is_signed_in(phone)

    r = post_form(laptop, "/account/password", {"current_password": PASSWORD,
                                                "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
                  token_from="/account/password")
    assert r.status_code == 302
    assert is_signed_in(laptop), "the device that changed the password stays signed in"
    r = phone.get("/")
    assert r.status_code == 302 and path_of(r) == "/login"
    assert not is_signed_in(replay(app, remember_token=phone_remember))

    assert login(app.test_client(), user, PASSWORD).status_code == 401
    assert login(app.test_client(), user, NEW_PASSWORD).status_code == 302


def test_idle_session_is_signed_out(app, make):
    user = make.rural()
    client = app.test_client()
    login(client, user, remember=True)
    limit = app.config["IDLE_TIMEOUT_MINUTES"] * 60

    set_last_activity(client, limit - 120)  # still inside the window
    assert client.get("/").status_code == 200

    set_last_activity(client, limit + 60)
    r = client.get("/consults/new")
    assert r.status_code == 302 and path_of(r) == "/login"
    assert "next=/consults/new" in r.headers["Location"]
    page = client.get(r.headers["Location"])
    assert "You were signed out after a period of inactivity. Please sign in again." in flashes(page)
    assert not is_signed_in(client), "the remember-me cookie does not sign the idle session back in"


def test_an_idle_browser_keeps_its_session_cookie_so_remember_me_cannot_skip_the_idle_check(app, make):
    """The browser must still send the last activity when it comes back after the idle time."""
    client = app.test_client()
    login(client, make.rural(), remember=True)
    assert client.get("/").status_code == 200  # a signed-in request stamps the activity and the expiry
    session_cookie, remember_cookie = client.get_cookie("session"), client.get_cookie("remember_token")
    idle_deadline = datetime.now(UTC).timestamp() + app.config["IDLE_TIMEOUT_MINUTES"] * 60
    assert session_cookie.expires is not None and remember_cookie.expires is not None
    assert session_cookie.expires.timestamp() > idle_deadline + 3600
    assert session_cookie.expires.timestamp() >= remember_cookie.expires.timestamp() - 5
    # ... so the browser that comes back idle sends both cookies, and is signed out (not back in)
    set_last_activity(client, app.config["IDLE_TIMEOUT_MINUTES"] * 60 + 60)
    assert client.get("/").status_code == 302
    assert not is_signed_in(client)
    assert client.get_cookie("remember_token") is None


def test_idle_session_json_caller_gets_401(app, make, monkeypatch):
    client = app.test_client()
    login(client, make.rural())
    set_last_activity(client, 10 * 3600)
    r = client.get("/", headers={"Accept": "application/json"})
    assert r.status_code == 401
    assert r.get_json() == {"error": "session_expired", "message": "Your session expired. Sign in again."}


def test_idle_timeout_setting_is_honoured(app, make, monkeypatch):
    client = app.test_client()
    login(client, make.rural())
    set_last_activity(client, 5 * 60)
    monkeypatch.setitem(app.config, "IDLE_TIMEOUT_MINUTES", 2)
    r = client.get("/")
    assert r.status_code == 302 and path_of(r) == "/login"


def test_idle_session_posting_a_form_changes_nothing(app, make):
    user = make.rural()
    consult = make.draft(user, chief_complaint="Original")
    client = app.test_client()
    login(client, user)
    token = csrf_token(client, f"/consults/{consult.ref}/edit")
    set_last_activity(client, 10 * 3600)
    r = client.post(f"/consults/{consult.ref}/edit", data={"csrf_token": token, "chief_complaint": "Changed",
                                                           "urgency": "routine", "save": "1"})
    assert r.status_code == 302 and path_of(r) == "/login"
    reread()
    assert db.session.get(type(consult), consult.id).chief_complaint == "Original"


# --- CSRF and redirects --------------------------------------------------------------------------------


def test_post_without_csrf_token_is_400_with_a_message(app, make):
    user = make.rural()
    client = app.test_client()
    r = client.post("/login", data={"email": user.email, "password": PASSWORD})
    assert r.status_code == 400
    assert lede(r) == "This form has expired or was not sent from Huizhen. Reload the page and try again."
    assert not is_signed_in(client)

    login(client, user)
    r = client.post("/consults/new", data={"chief_complaint": "No token", "urgency": "routine", "save": "1"})
    assert r.status_code == 400 and "This form has expired" in lede(r)
    r = client.post("/consults/new", data={"csrf_token": "forged", "chief_complaint": "x", "save": "1"})
    assert r.status_code == 400
    other = app.test_client()
    foreign = csrf_token(other, "/login")
    r = client.post("/consults/new", data={"csrf_token": foreign, "chief_complaint": "x", "save": "1"})
    assert r.status_code == 400, "a token from another session is refused"
    r = client.post("/consults/new", data={"chief_complaint": "x"}, headers={"Accept": "application/json"})
    assert r.status_code == 400 and r.get_json()["error"] == "csrf_failed"
    reread()
    from webapp.models import Consult

    assert db.session.scalar(select(func.count()).select_from(Consult)) == 0


def resolved_host(location: str) -> str:
    """The host a browser goes to for this Location on http://localhost/ (browsers read a
    backslash as a slash and drop tabs and newlines)."""
    cleaned = re.sub(r"[\t\n\r]", "", location).replace("\\", "/")
    return urlsplit(urljoin("http://localhost/login", cleaned)).hostname or ""


@pytest.mark.parametrize("target", [
    "https://evil.example", "//evil.example", "https:/evil.example", "javascript:alert(1)",
    "http://localhost.evil.example/", "",
])
def test_login_with_an_off_site_next_lands_on_the_dashboard(app, make, target):
    user = make.rural()
    client = app.test_client()
    token = csrf_token(client, "/login")
    r = client.post("/login", query_string={"next": target},
                    data={"csrf_token": token, "email": user.email, "password": PASSWORD})
    assert r.status_code == 302
    assert r.headers["Location"] == "/", r.headers["Location"]


@pytest.mark.parametrize("target", [
    "/\\evil.example", "\\\\evil.example", "/\t/evil.example", "/\n/evil.example", "/%5C/evil.example",
    "///evil.example", "/.//evil.example",
])
def test_login_never_redirects_off_site(app, make, target):
    user = make.rural()
    client = app.test_client()
    token = csrf_token(client, "/login")
    r = client.post("/login", query_string={"next": target},
                    data={"csrf_token": token, "email": user.email, "password": PASSWORD})
    assert r.status_code == 302
    assert resolved_host(r.headers["Location"]) == "localhost", r.headers["Location"]


def test_login_returns_to_the_page_asked_for(app, make):
    user = make.rural()
    consult = make.draft(user, chief_complaint="Where I was going")
    client = app.test_client()
    r = client.get(f"/consults/{consult.ref}")
    assert r.status_code == 302 and path_of(r) == "/login"
    login_page = client.get(r.headers["Location"])
    assert "Please sign in to continue." in flashes(login_page)
    token = CSRF_RE.search(login_page.get_data(as_text=True)).group(1)
    r = client.post(r.headers["Location"], data={"csrf_token": token, "email": user.email, "password": PASSWORD})
    assert r.status_code == 302 and r.headers["Location"] == f"/consults/{consult.ref}"
    assert "Where I was going" in client.get(r.headers["Location"]).get_data(as_text=True)


# --- headers and cookies -------------------------------------------------------------------------------


def test_security_headers_on_pages_errors_and_json(app, make):
    client = app.test_client()
    responses = [client.get("/login"), client.get("/register"), client.get("/nowhere"),
                 client.get("/nowhere", headers={"Accept": "application/json"})]
    login(client, make.rural())
    responses += [client.get("/"), client.get("/consults/new")]
    for r in responses:
        csp = r.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'"
        assert directives["object-src"] == "'none'"
        assert directives["frame-ancestors"] == "'none'"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "same-origin"
        assert "no-store" in r.headers["Cache-Control"]
        if r.mimetype == "text/html":
            body = r.get_data(as_text=True)
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", body), "inline script (CSP would block it)"
            assert not re.search(r"\sstyle=|\son[a-z]+=", body), "inline style or handler"


def test_session_and_remember_cookies_are_httponly_and_samesite(app, make):
    client = app.test_client()
    r = client.get("/login")
    token = CSRF_RE.search(r.get_data(as_text=True)).group(1)
    r = client.post("/login", data={"csrf_token": token, "email": make.rural().email, "password": PASSWORD,
                                    "remember": "y"})
    cookies = {c.split("=", 1)[0]: c for c in r.headers.getlist("Set-Cookie")}
    for name in ("session", "remember_token"):
        assert "HttpOnly" in cookies[name], name
        assert "SameSite=Lax" in cookies[name], name


# --- production start -----------------------------------------------------------------------------------

GOOD_PRODUCTION = {
    "SECRET_KEY": "V8q2mZ7xR4tL0pK9wN3bH6yF1sD5gJ8cQ2e",
    "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://huizhen@db.internal/huizhen",
    "ALLOWED_ORIGINS": ["https://huizhen.example.cn"],
    "DEBUG": False,
}


@pytest.fixture
def production_env(monkeypatch):
    monkeypatch.delenv("HUIZHEN_ALLOW_SQLITE", raising=False)


def test_good_production_settings_pass_the_check(production_env):
    probe = Flask("probe")
    probe.config.from_object(ProductionConfig)
    probe.config.update(GOOD_PRODUCTION)
    check_production_config(probe)  # no exception


@pytest.mark.parametrize(("override", "problem"), [
    ({"DEBUG": True}, "DEBUG is on"),
    ({"SECRET_KEY": None}, "SECRET_KEY"),
    ({"SECRET_KEY": ""}, "SECRET_KEY"),
    ({"SECRET_KEY": "dev"}, "SECRET_KEY"),
    ({"SECRET_KEY": "change-me"}, "SECRET_KEY"),
    ({"SECRET_KEY": "a" * 64}, "SECRET_KEY"),
    ({"SECRET_KEY": TestingConfig.SECRET_KEY}, "SECRET_KEY"),
    ({"ALLOWED_ORIGINS": ["*"]}, "ALLOWED_ORIGINS contains '*'"),
    ({"ALLOWED_ORIGINS": ["https://huizhen.example.cn", "*"]}, "ALLOWED_ORIGINS contains '*'"),
    ({"SQLALCHEMY_DATABASE_URI": "sqlite:///instance/prod.db"}, "SQLite"),
    ({"SQLALCHEMY_DATABASE_URI": "sqlite://"}, "SQLite"),
], ids=["debug", "no-key", "empty-key", "short-key", "default-key", "repetitive-key", "testing-key",
        "wildcard-origin", "wildcard-among-origins", "sqlite-file", "sqlite-memory"])
def test_production_refuses_unsafe_settings(production_env, override, problem):
    with pytest.raises(RuntimeError) as info:
        create_app(ProductionConfig, {**GOOD_PRODUCTION, **override})
    assert "Refusing to start in production" in str(info.value)
    assert problem in str(info.value)


# --- registration does not reveal which emails have accounts ---------------------------------------------


def test_registration_says_the_same_for_a_taken_email_creates_nothing_and_tells_the_owner(app, make,
                                                                                       smtp_server):
    facility = make.facility()
    owner = make.rural(email="owner@test.example", name="Dr Owner")
    base = {"full_name": "Dr Someone", "password": PASSWORD, "confirm": PASSWORD, "role": "rural_doctor",
            "facility_id": str(facility.id), "specialty": "", "languages": ["zh-CN"],
            "licence_number": "620100000999", "timezone": "Asia/Shanghai"}
    taken = post_form(app.test_client(), "/register", {**base, "email": "OWNER@test.example"}, token_from="/register")
    fresh = post_form(app.test_client(), "/register", {**base, "email": "new@test.example"}, token_from="/register")

    assert taken.status_code == fresh.status_code == 201
    assert lede(taken) == lede(fresh) and "if this address can be used, you will hear from us" in lede(taken)
    assert flashes(taken) == flashes(fresh) == []
    reread()
    assert db.session.scalar(select(func.count()).select_from(User).where(
        func.lower(User.email) == "owner@test.example")) == 1
    assert db.session.get(User, owner.id).full_name == "Dr Owner"  # nothing of the owner's account changed
    assert db.session.scalar(select(func.count()).select_from(User)) == 2  # owner + new registrant

    [notice] = smtp_server.wait_for("owner@test.example")
    assert "tried to register" in notice["Subject"]
    assert "No new account was created" in mail_text(notice) and "/password/forgot" in mail_text(notice)
    smtp_server.wait_for("new@test.example")  # the new registrant hears from us too: same outcome outside


# --- suspension and reinstatement by a coordinator ---------------------------------------------------


def test_a_coordinator_suspends_and_reinstates_an_account_and_its_sessions_end_at_once(app, make):
    coordinator, user = make.coordinator(), make.rural(email="suspended@test.example")
    phone, coord = app.test_client(), app.test_client()
    assert login(phone, user, remember=True).status_code == 302
    remember = cookie(phone, "remember_token")
    assert login(coord, coordinator).status_code == 302
    assert "suspended@test.example" in coord.get("/admin/registrations").get_data(as_text=True)

    r = post_form(coord, f"/admin/users/{user.id}/suspend", {"reason": ""}, token_from="/admin/registrations")
    assert r.status_code == 422 and is_signed_in(phone)
    r = post_form(coord, f"/admin/users/{user.id}/suspend", {"reason": "Licence under review"},
                  token_from="/admin/registrations")
    assert r.status_code == 302 and "signed out everywhere" in " ".join(flashes(coord.get(r.headers["Location"])))
    assert not is_signed_in(phone)
    assert not is_signed_in(replay(app, remember_token=remember))
    r = login(app.test_client(), user)
    assert r.status_code == 403 and "suspended" in " ".join(flashes(r))
    reread()
    assert db.session.get(User, user.id).status == AccountStatus.SUSPENDED
    [entry] = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "account.suspended")).all()
    assert (entry.actor_id, entry.target, entry.detail["reason"]) == (coordinator.id, f"user:{user.id}",
                                                                      "Licence under review")

    r = post_form(coord, f"/admin/users/{user.id}/reinstate", token_from="/admin/registrations")
    assert r.status_code == 302
    assert login(app.test_client(), user).status_code == 302
    reread()
    assert [e.actor_id for e in db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "account.reinstated"))] == [coordinator.id]
    # refusals: a second reinstatement, a clinician trying, an unknown account
    assert post_form(coord, f"/admin/users/{user.id}/reinstate", token_from="/admin/registrations").status_code == 409
    assert post_form(coord, "/admin/users/999999/suspend", {"reason": "x"},
                     token_from="/admin/registrations").status_code == 404
    other = app.test_client()
    login(other, make.specialist())
    assert post_form(other, f"/admin/users/{user.id}/suspend", {"reason": "x"}).status_code == 403
    assert is_signed_in(app.test_client()) is False


# --- password reset --------------------------------------------------------------------------------------

LINK_RE = re.compile(r"http://localhost(/password/reset/[A-Za-z0-9_-]+)")


def test_forgot_password_says_the_same_for_any_email_and_mails_a_single_use_link(app, make, smtp_server):
    user = make.rural(email="forgetful@test.example")
    laptop = app.test_client()
    assert login(laptop, user, remember=True).status_code == 302

    known = post_form(app.test_client(), "/password/forgot", {"email": "Forgetful@test.example"},
                      token_from="/password/forgot")
    unknown = post_form(app.test_client(), "/password/forgot", {"email": "nobody@test.example"},
                        token_from="/password/forgot")
    assert known.status_code == unknown.status_code == 302
    assert known.headers["Location"] == unknown.headers["Location"]
    [mail] = smtp_server.wait_for("forgetful@test.example")
    assert smtp_server.to("nobody@test.example") == []
    path = LINK_RE.search(mail_text(mail)).group(1)
    reread()
    token_part = path.rsplit("/", 1)[1]
    assert db.session.scalar(select(func.count()).select_from(PasswordReset).where(
        PasswordReset.token_hash == token_part)) == 0, "only the token's hash is stored"

    browser = app.test_client()
    assert browser.get(path).status_code == 200
    r = post_form(browser, path, {"new_password": "short", "confirm": "short"}, token_from=path)
    assert r.status_code == 422
    r = post_form(browser, path, {"new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, token_from=path)
    assert r.status_code == 302 and path_of(r) == "/login"
    assert not is_signed_in(laptop), "a reset ends every session"
    assert login(app.test_client(), user, PASSWORD).status_code == 401
    assert login(app.test_client(), user, NEW_PASSWORD).status_code == 302

    # used once: the same link is refused, with a clear message
    again = app.test_client().get(path)
    assert again.status_code == 400 and "invalid, already used or expired" in again.get_data(as_text=True)
    r = post_form(app.test_client(), path, {"new_password": "another-long-passphrase",
                                            "confirm": "another-long-passphrase"}, token_from="/login")
    assert r.status_code == 400
    assert login(app.test_client(), user, NEW_PASSWORD).status_code == 302
    reread()
    assert len(db.session.scalars(select(AuditEvent).where(AuditEvent.action == "auth.password_reset")).all()) == 1


def test_a_wrong_or_expired_reset_link_is_refused(app, make, smtp_server):
    user = make.rural(email="late@test.example")
    assert app.test_client().get("/password/reset/not-a-real-token").status_code == 400
    assert app.test_client().get("/password/reset/" + "x" * 300).status_code == 400
    post_form(app.test_client(), "/password/forgot", {"email": user.email}, token_from="/password/forgot")
    path = LINK_RE.search(mail_text(smtp_server.wait_for(user.email)[0])).group(1)
    db.session.execute(update(PasswordReset).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    r = post_form(app.test_client(), path, {"new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
                  token_from="/login")
    assert r.status_code == 400
    assert login(app.test_client(), user, PASSWORD).status_code == 302


def test_forgot_password_is_throttled_like_login(app, make, monkeypatch):
    monkeypatch.setitem(app.config, "LOGIN_RATE_LIMIT", "2 per minute")
    client = app.test_client()
    codes = [post_form(client, "/password/forgot", {"email": "someone@test.example"},
                       token_from="/password/forgot").status_code for _ in range(3)]
    assert codes == [302, 302, 429]


def test_a_coordinator_issues_a_reset_link_where_email_is_not_configured(app, make, caplog):
    coordinator, user = make.coordinator(), make.specialist(email="nomail@test.example")
    coord = app.test_client()
    login(coord, coordinator)
    r = post_form(coord, f"/admin/users/{user.id}/reset-link", token_from="/admin/registrations")
    assert r.status_code == 200
    path = LINK_RE.search(r.get_data(as_text=True)).group(1)
    reread()
    [entry] = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "account.reset_link_issued")).all()
    assert (entry.actor_id, entry.target) == (coordinator.id, f"user:{user.id}")
    browser = app.test_client()
    r = post_form(browser, path, {"new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, token_from=path)
    assert r.status_code == 302
    assert login(app.test_client(), user, NEW_PASSWORD).status_code == 302
    clinician = app.test_client()
    login(clinician, make.rural())
    assert post_form(clinician, f"/admin/users/{user.id}/reset-link").status_code == 403


def test_without_smtp_the_mail_is_logged_and_an_smtp_failure_is_never_a_500(app, make, caplog, monkeypatch):
    user = make.rural(email="logged@test.example")

    def logged(pattern: str) -> bool:  # the mail goes out in a background task
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if re.search(pattern, caplog.text):
                return True
            time.sleep(0.05)
        return False

    caplog.set_level("INFO", logger="webapp.mail")
    r = post_form(app.test_client(), "/password/forgot", {"email": user.email}, token_from="/password/forgot")
    assert r.status_code == 302
    assert logged(LINK_RE.pattern), "make run users find the link in the log"
    monkeypatch.setitem(app.config, "SMTP_URL", f"smtp://127.0.0.1:{free_port()}")  # nobody listens there
    r = post_form(app.test_client(), "/password/forgot", {"email": user.email}, token_from="/password/forgot")
    assert r.status_code == 302
    assert logged("could not send the mail")
