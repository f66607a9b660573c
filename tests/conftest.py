"""Fixtures for every test layer: app, database, clients, factories, live server."""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.globals import _cv_app
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import create_engine, inspect, text, update
from werkzeug.serving import make_server

from config import TestingConfig
from webapp import create_app, ratelimit
from webapp.auth.services import Registration, create_user
from webapp.auth.sessions import hash_key
from webapp.consults import services as consults
from webapp.extensions import db, limiter
from webapp.models import (
    AccountStatus,
    Consult,
    ConsultParticipant,
    Facility,
    FacilityLevel,
    Partnership,
    Role,
    Sex,
    Urgency,
    User,
    UserSession,
    utcnow,
)
from webapp.notes import state as notes_state
from webapp.rooms import state as room_state
from webapp.scheduling import services as scheduling

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PASSWORD = "correct-horse-battery"
POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/huizhen_test"
)


# --- CI: a skipped test is a failure ----------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped under CI=true, which counts as a failure: {reason}"


def require(condition: bool, reason: str) -> None:
    """Skip with a clear reason on a laptop; under CI=true the skip becomes a failure."""
    if not condition:
        pytest.skip(reason)


# --- database ---------------------------------------------------------------------------------


def _reset_schema(url: str) -> None:
    """Drop every table so the migrations build the schema from empty."""
    engine = create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        else:
            for table in inspect(conn).get_table_names():
                conn.execute(text(f'DROP TABLE IF EXISTS "{table}"'))
    engine.dispose()


def postgres_available(url: str = POSTGRES_URL) -> bool:
    """Whether the test PostgreSQL server answers (creating the test database if needed)."""
    try:
        engine = create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        admin = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"'))
            return True
        except Exception:
            return False
        finally:
            admin.dispose()


def build_app(database_url: str, tmp: Path, *, reset_schema: bool = True, **overrides) -> Flask:
    """A test app on the given database, schema built by the Alembic migrations.

    reset_schema=False keeps what is there (e.g. a schema whose ownership a test has set up).
    """
    if database_url.startswith("postgresql"):
        postgres_available(database_url)
    if reset_schema:
        _reset_schema(database_url)
    config = {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "UPLOAD_DIR": str(tmp / "uploads"),
        "LOGIN_RATE_LIMIT": "1000 per minute",
    }
    config.update(overrides)
    app = create_app(TestingConfig, config)
    app.test_client_class = IsolatedClient
    with app.app_context():
        upgrade(directory=str(Path(__file__).resolve().parent.parent / "migrations"))
    return app


def build_postgres_app(suffix: str, tmp_path_factory, threads: int) -> Flask:
    """An app on a PostgreSQL database of its own (POSTGRES_URL + suffix), whatever the suite runs on,
    with a pool large enough for `threads` concurrent workers."""
    url = f"{POSTGRES_URL}_{suffix}"
    require(postgres_available(url), f"PostgreSQL is not reachable at {url}")
    return build_app(url, tmp_path_factory.mktemp("pg-files"),
                     SQLALCHEMY_ENGINE_OPTIONS={"pool_size": threads + 5, "max_overflow": 5})


def emptied(app: Flask) -> Iterator[Flask]:
    """Empty the app's tables, then hold its app context for a test (a fixture body)."""
    truncate_all(app)
    with app.app_context():
        yield app
        db.session.remove()


# --- apps of a module's own for races between threads ---------------------------------------------
# A module sets RACE_DB (its databases' suffix) and THREADS (how many at once) and takes race_pg_app
# or race_sqlite_app: each test gets the module's app with its tables emptied and its context held.


@pytest.fixture(scope="module")
def _race_pg_app(request, tmp_path_factory) -> Flask:
    return build_postgres_app(request.module.RACE_DB, tmp_path_factory, request.module.THREADS)


@pytest.fixture
def race_pg_app(_race_pg_app: Flask) -> Iterator[Flask]:
    yield from emptied(_race_pg_app)


@pytest.fixture(scope="module")
def _race_sqlite_app(request, tmp_path_factory) -> Flask:
    tmp = tmp_path_factory.mktemp(f"sqlite-{request.module.RACE_DB}")
    return build_app(f"sqlite:///{tmp / 'race.db'}", tmp)


@pytest.fixture
def race_sqlite_app(_race_sqlite_app: Flask) -> Iterator[Flask]:
    yield from emptied(_race_sqlite_app)


def truncate_all(app: Flask, attempts: int = 5) -> None:
    """Empty every table between tests (the schema stays).

    On PostgreSQL a server still serving the previous test's pages (a cluster's nodes) may hold a
    table that TRUNCATE waits for while it waits for another: PostgreSQL then ends one side with
    "deadlock detected", and the truncate is tried again.
    """
    from sqlalchemy.exc import OperationalError

    with app.app_context():
        tables = [t.name for t in reversed(db.metadata.sorted_tables)]
        for attempt in range(attempts):
            try:
                with db.engine.begin() as conn:
                    if db.engine.dialect.name == "postgresql":
                        conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables)
                                          + " RESTART IDENTITY CASCADE"))
                    else:
                        for t in tables:
                            conn.execute(text(f'DELETE FROM "{t}"'))
                return
            except OperationalError as exc:
                if "deadlock detected" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'huizhen-test.db'}"


def pytest_sessionstart(session: pytest.Session) -> None:
    """The .mo catalogs are built from the .po files (as `make translations` does) before any
    app starts, so a run of pytest alone speaks Chinese with the catalogs of this checkout."""
    from webapp.i18n.catalogs import compile_all

    compile_all()


@pytest.fixture(scope="session")
def _app(database_url, tmp_path_factory) -> Flask:
    return build_app(database_url, tmp_path_factory.mktemp("files"))


def _unmock_socketio(app: Flask) -> None:
    """Point Flask-SocketIO back at this app's server and undo its test client's patching.

    The SocketIO object is a singleton whose ``server`` is the one built by the LAST app
    created; another test that builds an app (a "restarted" server, PostgreSQL) would leave it
    pointing elsewhere, and events for this app would be ignored. The test client also patches
    the server so that packets for real clients are swallowed.
    """
    from webapp.extensions import socketio
    from webapp.realtime import SERVER_KEY

    server = app.extensions[SERVER_KEY]
    socketio.server = server
    for name in ("_send_packet", "_send_eio_packet"):
        server.__dict__.pop(name, None)


def _end_leftover_connections(app: Flask, wait: float = 5.0) -> None:
    """End the socket connections an earlier test left in a consult's room (a browser page it did
    not close when it failed): this test reuses consult and user ids, and would meet them there.

    Their own disconnects come first (a closed page's socket takes a moment to be seen going);
    whatever is still joined after `wait` seconds is disconnected by the server.
    """
    from webapp.realtime import SERVER_KEY, connections, joined_connections

    deadline = time.monotonic() + wait
    while joined_connections(app) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = joined_connections(app)
    if not left:
        return
    warnings.warn(f"connections left joined by an earlier test, ended now: {left}", stacklevel=1)
    server = app.extensions[SERVER_KEY]
    for namespace, sids in left.items():
        for sid in sids:
            with contextlib.suppress(Exception):  # a socket whose transport is already gone
                server.disconnect(sid, namespace=namespace)
            connections(namespace, app).remove(sid)


@pytest.fixture
def generous_chat(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chat rate limit no test reaches by posting fast; the rate-limit tests set their own."""
    monkeypatch.setitem(app.config, "CHAT_MESSAGES_PER_SECOND", 1000)


@pytest.fixture
def app(_app: Flask) -> Iterator[Flask]:
    """The app with empty tables and a fresh rate limiter, inside an app context."""
    truncate_all(_app)
    limiter.reset()
    room_state.reset(_app)  # the chat's own per-user window, activity times, resync gate (rooms.state)
    ratelimit.reset(_app)  # socket event windows and refusal counters (ids are reused between tests)
    _app.extensions.pop("huizhen.chat_notices", None)  # who was told of which consult's chat (ids again)
    notes_state.reset(_app)  # live notes documents, limiters and editors by consult id (ids again)
    _unmock_socketio(_app)
    _end_leftover_connections(_app)
    _app.config["LOGIN_RATE_LIMIT"] = "1000 per minute"
    with _app.app_context():
        yield _app
        db.session.rollback()
        db.session.remove()
    _unmock_socketio(_app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# --- factories ----------------------------------------------------------------------------------


@dataclass
class Factory:
    """Builds a world through the real services."""

    counter: int = 0
    facilities: dict[str, Facility] = field(default_factory=dict)

    def _n(self) -> int:
        self.counter += 1
        return self.counter

    def facility(self, name: str | None = None, level: FacilityLevel = FacilityLevel.COUNTY_HOSPITAL) -> Facility:
        f = Facility(name=name or f"Facility {self._n()}", level=level, region="Gansu")
        db.session.add(f)
        db.session.commit()
        return f

    def partnership(self, facility: Facility, partner: Facility) -> Partnership:
        p = Partnership(facility_id=facility.id, partner_id=partner.id)
        db.session.add(p)
        db.session.commit()
        return p

    def user(self, role: Role, *, facility: Facility | None = None, specialty: str | None = None,
             status: AccountStatus = AccountStatus.APPROVED, email: str | None = None,
             timezone: str = "Asia/Shanghai", name: str | None = None) -> User:
        n = self._n()
        if facility is None and role != Role.COORDINATOR:
            facility = self.facility()
        if role == Role.SPECIALIST and specialty is None:
            specialty = "cardiology"
        user = create_user(Registration(
            email=email or f"{role.value}{n}@test.example", password=PASSWORD,
            full_name=name or f"{role.label} {n}", role=role,
            facility_id=facility.id if facility else 0, licence_number=f"LIC{n:05d}",
            timezone=timezone, languages=("zh-CN", "en"), specialty=specialty,
        ), status=status)
        db.session.commit()
        return user

    def rural(self, **kw) -> User:
        return self.user(Role.RURAL_DOCTOR, **kw)

    def specialist(self, **kw) -> User:
        return self.user(Role.SPECIALIST, **kw)

    def coordinator(self, **kw) -> User:
        return self.user(Role.COORDINATOR, **kw)

    def availability(self, specialist: User, hours: tuple[int, int] = (0, 24)) -> None:
        scheduling.set_availability(specialist, [
            scheduling.Window(day, hours[0] * 60, hours[1] * 60) for day in range(7)
        ])

    def case(self, **overrides) -> consults.CaseData:
        data = consults.CaseData(
            specialty="cardiology", urgency=Urgency.URGENT, patient_age_years=60, patient_sex=Sex.MALE,
            chief_complaint="Chest pain", history="Three weeks of exertional chest pain.",
            findings="ST depression V4-V6", question="Angiography or medical management?",
        )
        for key, value in overrides.items():
            setattr(data, key, value)
        return data

    def draft(self, requester: User, **overrides) -> Consult:
        return consults.create_draft(requester, self.case(**overrides))

    def requested(self, requester: User, **overrides) -> Consult:
        c = self.draft(requester, **overrides)
        return consults.submit(requester, c.ref)

    def accepted(self, requester: User, specialist: User, **overrides) -> Consult:
        c = self.requested(requester, **overrides)
        return consults.accept(specialist, c.ref)

    def scheduled(self, requester: User, specialist: User, **overrides) -> Consult:
        c = self.requested(requester, **overrides)
        if not scheduling.windows_of(specialist):
            self.availability(specialist)
        slot = scheduling.open_slots(specialist)[1]  # not the first: it may fall inside the lead time a moment later
        return consults.accept(specialist, c.ref, slot.starts_at)

    def participant(self, consult: Consult, user: User, role: str, *, by: User | None = None) -> ConsultParticipant:
        """Invite user into the consult (by its requester unless told) and accept, through the services."""
        from webapp.consults import participants

        participants.invite(by or consult.requester, consult.ref, user.id, role)
        return participants.respond(user, consult.ref, accept=True)

    def second_specialist(self, consult: Consult, **kw) -> User:
        """An approved specialist invited into an accepted consult for an opinion, who accepted."""
        user = self.specialist(**{"specialty": "neurology", **kw})
        self.participant(consult, user, "specialist")
        return user

    def trainee(self, consult: Consult, **kw) -> User:
        """A doctor of the requester's facility invited to watch and learn, who accepted."""
        user = self.rural(facility=db.session.get(Facility, consult.requester.facility_id), **kw)
        self.participant(consult, user, "trainee")
        return user

    def chat_history(self, consult: Consult, count: int, senders: tuple[User, ...] = (),
                     prefix: str = "history") -> list[int]:
        """Append count chat messages to a consult at once (SQL, not one send each); their seqs.

        Written as the parties would have over time: alternating senders, the next sequence numbers
        from the consult's counter, bodies "<prefix> <seq>".
        """
        from sqlalchemy import insert, update

        from webapp.models import Message, RoomCounter
        from webapp.models.types import utcnow

        senders = senders or tuple(u for u in (consult.requester, consult.specialist) if u is not None)
        consult_id, sender_ids = consult.id, [u.id for u in senders]
        # End any read snapshot, then write first (the counter): on SQLite a transaction that read
        # before a live server committed could not take the write lock any more.
        db.session.commit()
        top = db.session.execute(
            update(RoomCounter).where(RoomCounter.consult_id == consult_id)
            .values(last_seq=RoomCounter.last_seq + count).returning(RoomCounter.last_seq)
            .execution_options(synchronize_session=False)).scalar()
        if top is None:
            db.session.execute(insert(RoomCounter).values(consult_id=consult_id, last_seq=count))
            top = count
        seqs = list(range(top - count + 1, top + 1))
        now = utcnow()
        db.session.execute(insert(Message), [
            {"consult_id": consult_id, "seq": seq, "sender_id": sender_ids[seq % len(sender_ids)],
             "client_id": f"{prefix}-{seq:08d}", "body": f"{prefix} {seq}", "created_at": now}
            for seq in seqs])
        db.session.commit()
        return seqs


@pytest.fixture
def make(app) -> Factory:
    return Factory()


@pytest.fixture
def team(make: Factory) -> tuple[Consult, User, User, User, User]:
    """A booked consult with its requester, lead, a second specialist and a trainee (who accepted)."""
    requester, lead = make.rural(), make.specialist()
    consult = make.scheduled(requester, lead)
    second, trainee = make.second_specialist(consult), make.trainee(consult)
    return consult, requester, lead, second, trainee


# --- HTTP helpers ---------------------------------------------------------------------------------

CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    """A CSRF token for the client's current session, read from a page like a browser would."""
    response = client.get(path, follow_redirects=True)
    match = CSRF_RE.search(response.get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def png_bytes(size: tuple[int, int] = (16, 12), colour: str = "red", *, noise: bool = False) -> bytes:
    """A real PNG image; with noise, random pixels (it barely compresses: size ≈ 3 bytes a pixel)."""
    import io

    from PIL import Image

    if noise:
        image = Image.frombytes("RGB", size, secrets.token_bytes(size[0] * size[1] * 3))
    else:
        image = Image.new("RGB", size, colour)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def login(client: FlaskClient, user_or_email, password: str = PASSWORD, *, remember: bool = False):
    """Sign in through the real login form."""
    email = user_or_email if isinstance(user_or_email, str) else user_or_email.email
    token = csrf_token(client, "/login")
    data = {"email": email, "password": password, "csrf_token": token}
    if remember:
        data["remember"] = "y"
    return client.post("/login", data=data)


def session_key_of(client: FlaskClient) -> str:
    """The server-side session key a signed-in test client carries in its session cookie."""
    with client.session_transaction() as sess:
        return sess["_user_id"]


def set_last_activity(client_or_key: FlaskClient | str, seconds_ago: float) -> None:
    """Make a signed-in browser's server-side session look last active that long ago."""
    key = client_or_key if isinstance(client_or_key, str) else session_key_of(client_or_key)
    db.session.execute(update(UserSession).where(UserSession.key_hash == hash_key(key))
                       .values(last_seen_at=utcnow() - timedelta(seconds=seconds_ago)))
    db.session.commit()


def post_form(client: FlaskClient, path: str, data: dict | None = None, *, token_from: str = "/", **kw):
    """POST a form with a valid CSRF token, as the page would."""
    payload = {"csrf_token": csrf_token(client, token_from)}
    payload.update(data or {})
    return client.post(path, data=payload, **kw)


class _FormReader(HTMLParser):
    """Collects what a browser would submit from a page's forms (no submit buttons)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self._select: str | None = None
        self._first: str | None = None

    def handle_starttag(self, tag: str, attrs) -> None:
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name and a.get("type", "text") not in ("submit", "button"):
            if a.get("type") not in ("checkbox", "radio") or "checked" in a:
                self.values[name] = a.get("value") or ("y" if a.get("type") == "checkbox" else "")
        elif tag == "select" and name:
            self._select, self._first = name, None
        elif tag == "option" and self._select:
            value = a.get("value", "")
            if self._first is None:
                self._first = value
                self.values.setdefault(self._select, value)
            if "selected" in a:
                self.values[self._select] = value

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def form_values(html: str) -> dict[str, str]:
    """The fields a browser would send back unchanged from the page's form (text, selects, checks)."""
    reader = _FormReader()
    reader.feed(html)
    return reader.values


# --- a real server on a loopback port --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The app served by a threaded Werkzeug server on 127.0.0.1 in a background thread."""

    def __init__(self, app: Flask) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = make_server("127.0.0.1", self.port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


@pytest.fixture
def live_server(app) -> Iterator[LiveServer]:
    server = LiveServer(app)
    origins = list(app.config["ALLOWED_ORIGINS"])
    app.config["ALLOWED_ORIGINS"] = [*origins, server.url]  # the WebSocket Origin allow-list
    server.start()
    yield server
    server.stop()
    app.config["ALLOWED_ORIGINS"] = origins


def http_session(base_url: str, email: str, password: str = PASSWORD) -> requests.Session:
    """A requests session signed in through the real login form (CSRF token from /login)."""
    session = requests.Session()
    page = session.get(f"{base_url}/login", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    r = session.post(f"{base_url}/login", data={"email": email, "password": password, "csrf_token": token},
                     allow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text[:300]
    return session


def cookie_header(session: requests.Session) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in session.cookies)


# --- a real SMTP server (aiosmtpd) on a loopback port ------------------------------------------------


class MailBox:
    """The mails a test SMTP server received, as parsed messages."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._cond = threading.Condition()

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd handler hook
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        with self._cond:
            return [m for m in self.messages if m["To"] == address]

    def wait_for(self, address: str, count: int = 1, timeout: float = 10) -> list[EmailMessage]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.to(address)) >= count, timeout), f"no mail to {address}"
        return self.to(address)


def mail_text(message: EmailMessage) -> str:
    """The plain-text body of a mail."""
    return message.get_body(preferencelist=("plain",)).get_content()


@pytest.fixture
def smtp_server(app, monkeypatch) -> Iterator[MailBox]:
    """An aiosmtpd server on 127.0.0.1 that the app sends its mail to (SMTP_URL)."""
    from aiosmtpd.controller import Controller

    box = MailBox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    monkeypatch.setitem(app.config, "SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
    yield box
    controller.stop()


# --- headless Chromium ---------------------------------------------------------------------------

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def browser():
    require(Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover
        require(False, "the playwright package is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def sign_in_page(page, base_url: str, email: str, password: str = PASSWORD) -> None:
    """Sign a Playwright page in through the login form and wait for the signed-in page."""
    from playwright.sync_api import expect

    page.goto(f"{base_url}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


@pytest.fixture
def shots() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# --- HTTP tests: one application context per request ------------------------------------------------


class IsolatedClient(FlaskClient):
    """A test client whose every request (and every redirect hop) runs in an app context of its own.

    The ``app`` fixture keeps an application context pushed for the whole test, and Flask reuses
    it for test-client requests: ``g`` (where Flask-Login caches the signed-in user and Flask-WTF
    the CSRF token) and the scoped database session then leak from one request, one client and one
    user to the next. Production never shares them, so HTTP tests should not either.
    """

    def run_wsgi_app(self, environ, buffered: bool = False):
        if _cv_app.get(None) is not None:
            db.session.commit()  # like a browser, the request sees what the test set up; no open snapshot
        with self.application.app_context():
            result = super().run_wsgi_app(environ, buffered=buffered)
        if _cv_app.get(None) is not None:
            db.session.expire_all()  # the test body reads what the request committed
        return result


@pytest.fixture
def isolated_requests(app, monkeypatch) -> None:
    """Kept for tests that ask for it: every test app already uses IsolatedClient (see build_app)."""
    monkeypatch.setattr(app, "test_client_class", IsolatedClient)



class IsolatedSocketClient:
    """A Flask-SocketIO test client whose connect and events each run in a fresh app context.

    On a real server every Socket.IO event gets its own app context (its own ``g``, where
    Flask-Login caches the user, and its own database session). The test client would reuse the
    test's app context instead, so two clients would share one ``current_user``. The test's
    session is committed before each event and expired after it, as for HTTP requests.
    """

    def __init__(self, app: Flask, flask_client: FlaskClient, namespace: str) -> None:
        from webapp.extensions import socketio
        from webapp.realtime import SERVER_KEY

        socketio.server = app.extensions[SERVER_KEY]  # several apps exist in one test session
        self.app = app
        self.namespace = namespace
        self._client = self._isolated(socketio.test_client, app, namespace=namespace,
                                      flask_test_client=flask_client)

    def _isolated(self, fn, *args, **kwargs):
        outer = _cv_app.get(None) is not None
        if outer:
            db.session.commit()
        with self.app.app_context():
            result = fn(*args, **kwargs)
        if outer:
            db.session.expire_all()
        return result

    def emit(self, *args, **kwargs):
        return self._isolated(self._client.emit, *args, **kwargs)

    def disconnect(self, *args, **kwargs):
        return self._isolated(self._client.disconnect, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


@pytest.fixture
def party_socket(app):
    """Signed-in Flask-SocketIO test clients on any namespace, optionally joined to a consult.

    ``party_socket(user, "/notes", ref)`` signs ``user`` in through the login form, connects an
    IsolatedSocketClient to the namespace and, given a ref, joins that consult (asserting the join
    succeeded). Every client is disconnected after the test.
    """
    made: list[IsolatedSocketClient] = []

    def connect(user, namespace: str, ref: str | None = None, **join) -> IsolatedSocketClient:
        flask_client = app.test_client()
        login(flask_client, user)
        client = IsolatedSocketClient(app, flask_client, namespace)
        made.append(client)
        assert client.is_connected(namespace), f"{namespace} refused the connection"
        if ref is not None:
            ack = client.emit("join", {"ref": ref, **join}, namespace=namespace, callback=True)
            assert ack and ack.get("ok"), ack
            client.get_received(namespace)  # start from an empty inbox
        return client

    yield connect
    for client in made:
        if client.is_connected(client.namespace):
            client.disconnect(client.namespace)


def committing(socket_client):
    """Kept for older call sites: the clients built by IsolatedSocketClient already isolate events."""
    return socket_client


# --- coturn (a real TURN server on loopback) --------------------------------------------------------


@dataclass
class Coturn:
    """A running coturn with use-auth-secret."""

    port: int
    secret: str
    realm: str

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"


def _wait_udp_listening(port: int, proc: subprocess.Popen, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"turnserver exited with {proc.returncode}")
        out = subprocess.run(["ss", "-lun"], capture_output=True, text=True).stdout
        if f"127.0.0.1:{port} " in out:
            return
        time.sleep(0.1)
    raise RuntimeError("turnserver did not start listening")


@pytest.fixture(scope="session")
def coturn() -> Iterator[Coturn]:
    binary = shutil.which("turnserver")
    require(binary is not None, "coturn is not installed (apt-get install coturn)")
    port = free_port()
    secret = secrets.token_hex(16)
    relay_lo = 40000 + (port % 1000) * 20
    cmd = [
        binary, "-n", "--use-auth-secret", f"--static-auth-secret={secret}", "--realm=huizhen.test",
        "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
        "--allow-loopback-peers", "--no-tls", "--no-dtls", "--no-cli", "--no-tcp-relay",
        f"--min-port={relay_lo}", f"--max-port={relay_lo + 19}", "--log-file=stdout", "--simple-log",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if shutil.which("ss"):
            _wait_udp_listening(port, proc)
        else:  # pragma: no cover - ss is in iproute2
            time.sleep(1.0)
        yield Coturn(port=port, secret=secret, realm="huizhen.test")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- a multi-node cluster: PostgreSQL, Redis, two gunicorn/gevent nodes, nginx (tests/cluster.py) ----


@pytest.fixture(scope="module")
def cluster(request) -> Iterator:
    """A cluster of the module's own; a module may set CLUSTER_ENV = {...} for the nodes' environment."""
    from tests.cluster import Cluster, missing_components

    missing = missing_components()
    require(not missing, "the multi-node harness needs " + ", ".join(missing))
    started = Cluster(env=getattr(request.module, "CLUSTER_ENV", None)).start()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module")
def cluster_app(cluster) -> Flask:
    """A test-side app on the cluster's database, to build data with Factory (schema from the nodes' upgrade).

    It has no message queue: what it changes reaches connected clients only through the nodes."""
    return create_app(TestingConfig, {"SQLALCHEMY_DATABASE_URI": cluster.database_url, "REDIS_URL": "",
                                      "UPLOAD_DIR": cluster.env["UPLOAD_DIR"], "ARGON2_FAST": True})


@pytest.fixture
def cluster_make(cluster_app) -> Iterator[Factory]:
    """A Factory writing to the cluster's database, emptied first, inside the cluster app's context."""
    truncate_all(cluster_app)
    with cluster_app.app_context():
        yield Factory()
        db.session.rollback()
        db.session.remove()


# --- a Redis database of the tests' own (REDIS_TEST_URL; .ci/run sets it) ------------------------

REDIS_TEST_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """REDIS_TEST_URL, emptied before and after the test; skipped (failed in CI) if Redis does not answer."""
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        require(False, f"Redis at {REDIS_TEST_URL} does not answer ({exc}); set REDIS_TEST_URL")
    client.flushdb()
    try:
        yield REDIS_TEST_URL
    finally:
        client.flushdb()
        client.close()


# --- processes of the test's own: a Redis server, Huizhen nodes -------------------------------------


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 20) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port (or the process exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def end_process(proc: subprocess.Popen | None) -> None:
    """Stop a process of the test's own: SIGTERM, then SIGKILL if it has not gone after 10 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RedisProcess:
    """A redis-server of the test's own on a loopback port, which the test may stop and start."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisProcess:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        end_process(self.proc)
        self.proc = None


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A Redis server for this test alone (never the machine's shared one)."""
    redis = RedisProcess()
    require(redis.binary is not None, "redis-server is not installed (apt-get install redis-server)")
    yield redis.start()
    redis.stop()


class NodeProcess:
    """One Huizhen node in a process of its own (tests/node_main.py), served on a loopback port."""

    def __init__(self, overrides: dict, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.overrides = {**overrides, "ALLOWED_ORIGINS": [*overrides.get("ALLOWED_ORIGINS", []), self.url]}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> NodeProcess:
        import json
        import sys

        env = {**os.environ, "HUIZHEN_TEST_OVERRIDES": json.dumps(self.overrides)}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.node_main", str(self.port)], env=env,
                                         cwd=Path(__file__).resolve().parent.parent, stdout=log, stderr=log)
        wait_for_port(self.port, self.proc, timeout=60)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        end_process(self.proc)
        self.proc = None


class TcpRelay:
    """A loopback TCP relay the test can cut: ``down()`` closes its port and every connection through
    it (the service behind it is unreachable, as in an outage), ``up()`` opens the same port again."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()

    def up(self) -> TcpRelay:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone leaves it listening)
            listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._pairs.append((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def two_nodes(app, own_redis, tmp_path) -> Iterator[list[NodeProcess]]:
    """Two Huizhen processes on the test's database, sharing the test's own Redis."""
    overrides = {"SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"], "REDIS_URL": own_redis.url,
                 "UPLOAD_DIR": str(tmp_path / "uploads"), "CHAT_MESSAGES_PER_SECOND": 1000,
                 "LOGIN_RATE_LIMIT": "1000 per minute"}
    nodes = [NodeProcess(overrides, tmp_path / f"node-{i}.log") for i in (1, 2)]
    try:
        yield [node.start() for node in nodes]
    finally:
        for node in nodes:
            node.stop()
